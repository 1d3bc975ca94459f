package layerfs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"
)

// maxLayerDifferences is how many differences Check names per layer; the
// rest are counted.
const maxLayerDifferences = 5

// checkLayerContents unpacks each layer in use again, from its intact
// blob, into a staging area, and compares the result with the layer's
// directory: the unpacked files cannot be hashed back to the diff ID, but
// they can be compared with what the blob that does hash to it unpacks to.
func (c *checker) checkLayerContents() error {
	type job struct{ blob, diffID v1.Hash }
	var jobs []job
	for blob, ids := range c.diffIDs {
		for _, id := range ids {
			if c.diffIDOK[id] && exists(c.s.layerDir(id)) {
				jobs = append(jobs, job{blob, id})
			}
		}
	}
	sort.Slice(jobs, func(i, j int) bool { return jobs[i].diffID.Hex < jobs[j].diffID.Hex })
	done := map[v1.Hash]bool{}
	for _, j := range jobs {
		if done[j.diffID] {
			continue
		}
		done[j.diffID] = true
		if err := c.ctx.Err(); err != nil {
			return err
		}
		diffs, err := c.compareLayer(j.blob, j.diffID)
		if err != nil {
			return err
		}
		if len(diffs) > 0 {
			detail := fmt.Sprintf("differs from a fresh unpack of blob %s: %s", j.blob, joinDiffs(diffs))
			c.report(ProblemLayerContent, filepath.Dir(c.s.layerDir(j.diffID)), "%s", detail)
		}
	}
	return nil
}

func joinDiffs(diffs []string) string {
	var b bytes.Buffer
	for i, d := range diffs {
		if i == maxLayerDifferences {
			fmt.Fprintf(&b, "; and %d more", len(diffs)-i)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(d)
	}
	return b.String()
}

// compareLayer unpacks blob into a staging area and returns how the
// unpacked layer diffID differs from it.
func (c *checker) compareLayer(blob, diffID v1.Hash) ([]string, error) {
	st, err := c.s.newStaging()
	if err != nil {
		return nil, err
	}
	defer st.remove()
	fresh := st.path("diff")
	if err := os.Mkdir(fresh, 0o755); err != nil {
		return nil, err
	}
	f, err := os.Open(c.s.blobPath(blob))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r, _, err := decompress(bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		return []string{fmt.Sprintf("the blob does not decompress: %v", err)}, nil
	}
	defer r.Close()
	// The fresh unpack is as large as the layer: it keeps the store's
	// reserve of free space as an import does, and running short of it
	// ends the check rather than being said of the layer.
	if err := unpackTar(c.s.withSpaceBudget(c.ctx), r, fresh); err != nil {
		if c.ctx.Err() != nil {
			return nil, c.ctx.Err()
		}
		if errors.Is(err, ErrNoSpace) {
			return nil, fmt.Errorf("unpack layer %s again: %w", diffID, err)
		}
		return []string{fmt.Sprintf("the blob does not unpack: %v", err)}, nil
	}
	return layerDifferences(fresh, c.s.layerDir(diffID))
}

// layerDifferences lists how the tree at got differs from the tree at want:
// entries missing or extra, and entries whose type, permissions, owner,
// size, content, link target, device number or extended attributes
// differ. Times are not compared: they say when, not what.
func layerDifferences(want, got string) ([]string, error) {
	var diffs []string
	seen := map[string]bool{}
	err := filepath.WalkDir(want, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(want, p)
		seen[rel] = true
		if rel == "." {
			// The layer's root takes its metadata from the tar only if
			// it has an entry for it, else from the umask of the
			// process that unpacked it.
			return nil
		}
		if d := compareEntry(p, filepath.Join(got, rel)); d != "" {
			diffs = append(diffs, "/"+filepath.ToSlash(rel)+": "+d)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = filepath.WalkDir(got, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(got, p)
		if !seen[rel] {
			diffs = append(diffs, "/"+filepath.ToSlash(rel)+": not in the blob")
			if d.IsDir() {
				return fs.SkipDir
			}
		}
		return nil
	})
	return diffs, err
}

// compareEntry says how the entry at got differs from the one at want, or
// returns "".
func compareEntry(want, got string) string {
	var a, b unix.Stat_t
	if err := unix.Lstat(want, &a); err != nil {
		return err.Error()
	}
	if err := unix.Lstat(got, &b); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return "missing"
		}
		return err.Error()
	}
	switch {
	case a.Mode != b.Mode:
		return fmt.Sprintf("mode %#o, want %#o", b.Mode, a.Mode)
	case a.Uid != b.Uid || a.Gid != b.Gid:
		return fmt.Sprintf("owner %d:%d, want %d:%d", b.Uid, b.Gid, a.Uid, a.Gid)
	case a.Mode&unix.S_IFMT == unix.S_IFREG && a.Size != b.Size:
		return fmt.Sprintf("size %d, want %d", b.Size, a.Size)
	case (a.Mode&unix.S_IFMT == unix.S_IFCHR || a.Mode&unix.S_IFMT == unix.S_IFBLK) && a.Rdev != b.Rdev:
		return fmt.Sprintf("device %d:%d, want %d:%d", unix.Major(b.Rdev), unix.Minor(b.Rdev), unix.Major(a.Rdev), unix.Minor(a.Rdev))
	}
	switch a.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		same, err := sameContent(want, got)
		if err != nil {
			return err.Error()
		}
		if !same {
			return "content differs"
		}
	case unix.S_IFLNK:
		ta, _ := os.Readlink(want)
		tb, err := os.Readlink(got)
		if err != nil {
			return err.Error()
		}
		if ta != tb {
			return fmt.Sprintf("links to %q, want %q", tb, ta)
		}
	}
	var x xattrReader
	xa, err := xattrs(&x, want)
	if err != nil {
		return err.Error()
	}
	xb, err := xattrs(&x, got)
	if err != nil {
		return err.Error()
	}
	for k, v := range xa {
		if w, ok := xb[k]; !ok || v != w {
			return "extended attribute " + k + " differs or is missing"
		}
	}
	for k := range xb {
		if _, ok := xa[k]; !ok {
			return "extended attribute " + k + " not in the blob"
		}
	}
	return ""
}

func sameContent(a, b string) (bool, error) {
	fa, err := os.Open(a)
	if err != nil {
		return false, err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return false, err
	}
	defer fb.Close()
	ba, bb := make([]byte, 64<<10), make([]byte, 64<<10)
	for {
		na, erra := io.ReadFull(fa, ba)
		nb, errb := io.ReadFull(fb, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return false, nil
		}
		if erra != nil || errb != nil {
			if (erra == io.EOF || erra == io.ErrUnexpectedEOF) && (errb == io.EOF || errb == io.ErrUnexpectedEOF) {
				return true, nil
			}
			return false, errors.Join(ignoreEOF(erra), ignoreEOF(errb))
		}
	}
}

func ignoreEOF(err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return nil
	}
	return err
}

// xattrs returns the extended attributes of path, not following a
// symlink.
func xattrs(x *xattrReader, path string) (map[string]string, error) {
	dirfd, err := openDirPath(filepath.Dir(path))
	if err != nil {
		return nil, err
	}
	defer unix.Close(dirfd)
	attrs, err := x.read(-1, dirfd, filepath.Base(path))
	if err != nil {
		return nil, &os.PathError{Op: "getxattr", Path: path, Err: err}
	}
	return attrs, nil
}
