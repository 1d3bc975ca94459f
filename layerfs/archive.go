package layerfs

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// A tarArchive is an image archive tar (an OCI layout or a docker
// archive) read once, member by member, into a table. Nothing of it is
// unpacked into a tree: a member is found by resolving its name in the
// table, symlinks included, so no name in the archive can lead to a file
// outside it, and only regular members can be opened. The contents of an
// uncompressed archive are read in place; a compressed one's regular
// members are copied, as the table is made, to files in a staging
// directory.
type tarArchive struct {
	format  Format
	members map[string]*tarMember
	src     *os.File // the archive
	inPlace bool     // members are read from src, not from copies
}

// A tarMember is one entry of the table.
type tarMember struct {
	name   string // as cleaned, for messages
	typ    byte   // tar.TypeReg, TypeDir or TypeSymlink; anything else cannot be opened
	what   string // for a member that cannot be opened, why
	link   string // a symlink's target
	size   int64
	offset int64  // of the contents in the archive, read in place
	copy   string // or the file they were copied to
}

// maxSymlinkHops bounds the symlinks followed in resolving one name, as
// the kernel's 40 does.
const maxSymlinkHops = 40

// maxArchiveMembers bounds the members an archive's table records. Real
// archives have a few per layer; a compressed tar of millions of empty
// members is small, and would otherwise cost memory and inodes.
const maxArchiveMembers = 1 << 16

// maxArchiveNameBytes bounds the bytes of member names and link targets
// an archive's table records. Each may be up to PATH_MAX, and Go's tar
// reader accepts names of about a MiB in PAX headers, so a compressed tar
// of a few hundred KiB could otherwise make the table take gigabytes.
// Real archives' names add up to a few KiB per layer.
const maxArchiveNameBytes = 8 << 20

// readTarArchive reads the tar at src, possibly compressed, and tells
// which format it is in. For an image archive it returns the member table;
// when copyTo is set, the regular members of a compressed archive are
// copied into that directory as the tar is read (when it is not, as for
// DetectFormat, their contents are skipped). A root filesystem tar is
// recognised by a member that no image archive holds (see archiveMarks);
// that of a compressed tar ends the reading at once, unless an OCI layout
// or a docker archive's manifest.json came before it, as the whole of it
// would have to be decompressed to see more. progress, if set, counts the bytes read
// from src.
//
// The caller closes the archive.
func readTarArchive(ctx context.Context, src, copyTo string, progress *progressCounter) (*tarArchive, error) {
	f, err := os.Open(src)
	if err != nil {
		return nil, err
	}
	a := &tarArchive{members: make(map[string]*tarMember), src: f, inPlace: true}
	ok := false
	defer func() {
		if !ok {
			a.close()
		}
	}()
	magic := make([]byte, 4)
	n, err := f.ReadAt(magic, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	var r io.Reader = f
	compressed := sniffCompression(magic[:n]) != uncompressed
	if compressed {
		var in io.Reader = f
		if progress != nil {
			in = io.TeeReader(f, progress)
		}
		rc, _, err := decompress(bufio.NewReaderSize(in, 1<<20))
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		// What the archive decompresses to counts against the import's
		// budget, as its layers' streams do: a small gzip of zeros must
		// not keep berth busy for an hour.
		r = importBudgetFrom(ctx).reader(rc)
		a.inPlace = false
	}
	// Read directly from the file, tar.Reader seeks over the contents
	// of members instead of reading them, and after each header the
	// file's offset is where the member's contents start.
	tr := tar.NewReader(r)
	var seen archiveMarks
	nameBytes := 0 // of the members recorded, see maxArchiveNameBytes
	for n := 0; ; n++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			if n == 0 {
				return nil, fmt.Errorf("empty archive: %w", ErrUnknownFormat)
			}
			break
		}
		if err != nil {
			if n == 0 {
				return nil, fmt.Errorf("not a tar archive (%v): %w", err, ErrUnknownFormat)
			}
			return nil, err
		}
		name := strings.TrimPrefix(path.Clean("/"+hdr.Name), "/")
		switch {
		case name == "oci-layout":
			seen.ociLayout = true
		case name == "index.json":
			seen.index = true
		case name == "manifest.json":
			seen.manifest = true
		case name == "":
		case isArchiveMemberName(name):
			seen.archiveMember = name
			if name == "blobs" || strings.HasPrefix(name, "blobs/") {
				seen.blobs = true
			}
		default:
			if seen.other == "" {
				seen.other = name
			}
			if compressed && !seen.layout() && !seen.dockerManifest {
				// Reading on would mean decompressing the whole of
				// what is most likely a root filesystem.
				a.format = FormatRootfsTar
				ok = true
				return a, nil
			}
			if !seen.layout() {
				// Only an OCI layout may hold other files, and this
				// tar may yet prove to be a root filesystem, whose
				// members are not worth a table.
				continue
			}
		}
		if len(a.members) == maxArchiveMembers {
			return nil, fmt.Errorf("more than %d members, which no image archive has: %w", maxArchiveMembers, ErrMemberTooLarge)
		}
		if err := checkMemberNames(name, hdr); err != nil {
			return nil, err
		}
		if nameBytes += len(name) + len(linkTarget(hdr)); nameBytes > maxArchiveNameBytes {
			return nil, fmt.Errorf("member names and link targets add up to more than %d bytes, which no image archive has: %w", maxArchiveNameBytes, ErrMemberTooLarge)
		}
		m := a.add(name, hdr)
		if k := documentKindOf(name); m.typ == tar.TypeReg && k.max > 0 && m.size > k.max {
			// Said now, rather than after reading it all.
			return nil, fmt.Errorf("%w: %s is %d bytes, and %s may be at most %d", ErrMemberTooLarge, shownName(name), m.size, k.what, k.max)
		}
		if name == "manifest.json" {
			// A later manifest.json replaces an earlier one.
			seen.dockerManifest = false
		}
		if m.typ != tar.TypeReg || hdr.Typeflag == tar.TypeLink || m.size == 0 {
			continue
		}
		if a.inPlace {
			if m.offset, err = a.src.Seek(0, io.SeekCurrent); err != nil {
				return nil, err
			}
		}
		if name == "manifest.json" {
			// Its contents are part of telling the format; it is
			// no larger than documentKindOf allows.
			var contents io.Reader = tr
			if a.inPlace {
				contents = io.NewSectionReader(a.src, m.offset, m.size)
			}
			b, err := io.ReadAll(io.LimitReader(contents, m.size))
			if err != nil {
				return nil, fmt.Errorf("member %s: %w", shownName(name), err)
			}
			seen.dockerManifest = namesDockerLayers(b)
			if !a.inPlace && copyTo != "" {
				if err := a.copyMember(ctx, bytes.NewReader(b), m, copyTo, strconv.Itoa(n)); err != nil {
					return nil, fmt.Errorf("member %s: %w", shownName(name), err)
				}
			}
			continue
		}
		if a.inPlace {
			continue
		}
		if copyTo != "" {
			if err := a.copyMember(ctx, tr, m, copyTo, strconv.Itoa(n)); err != nil {
				return nil, fmt.Errorf("member %s: %w", shownName(m.name), err)
			}
		}
	}
	switch {
	case seen.layout():
		a.format = FormatOCILayout
	case seen.manifest && (seen.other == "" || seen.dockerManifest):
		// A manifest.json beside nothing but image members, or one
		// that names a docker archive's layers: a docker archive,
		// whose import says which layers are missing, if any.
		a.format = FormatDockerArchive
	case seen.other == "" && seen.archiveMember != "":
		// Only the legacy format's layer directories: Docker before
		// 1.10 wrote no manifest.json, and neither does a partial copy.
		return nil, fmt.Errorf("holds image layers (%s) but no manifest.json or index.json to say how they make an image: %w", shownName(seen.archiveMember), ErrUnknownFormat)
	default:
		a.format = FormatRootfsTar
	}
	ok = true
	return a, nil
}

// archiveMarks are what the members of a tar read so far say of its
// format.
type archiveMarks struct {
	ociLayout, index, blobs bool   // an OCI layout's members
	manifest                bool   // a manifest.json
	dockerManifest          bool   // that parses as a docker archive's and names layers
	archiveMember           string // a member name image archives have, the last seen
	other                   string // a member name no image archive has, the first seen
}

// layout tells whether the tar is an OCI image layout: it has the
// oci-layout file, or an index.json and blobs. An index.json alone is
// not enough: a root filesystem may well hold one.
func (m *archiveMarks) layout() bool { return m.ociLayout || (m.index && m.blobs) }

// namesDockerLayers tells whether b, a manifest.json, is a docker
// archive's: a list of images of which one at least has a config and
// layers. Other programs' manifest.json files are objects, or lists of
// something else.
func namesDockerLayers(b []byte) bool {
	var manifest []struct {
		Config string
		Layers []string
	}
	if json.Unmarshal(b, &manifest) != nil {
		return false
	}
	for _, e := range manifest {
		if e.Config != "" && len(e.Layers) > 0 {
			return true
		}
	}
	return false
}

// checkMemberNames refuses a member whose cleaned name or link target is
// longer than PATH_MAX: no such path can be opened, resolve would refuse
// it anyway, and recording it would only cost memory.
func checkMemberNames(name string, hdr *tar.Header) error {
	if len(name) > unix.PathMax {
		return unsafeMember(name, fmt.Sprintf("name longer than %d bytes (PATH_MAX)", unix.PathMax))
	}
	if len(linkTarget(hdr)) > unix.PathMax {
		return unsafeMember(name, fmt.Sprintf("link target longer than %d bytes (PATH_MAX)", unix.PathMax))
	}
	return nil
}

// linkTarget returns the target of a symlink or hard link member, and ""
// for any other: their link names mean nothing and are not recorded.
func linkTarget(hdr *tar.Header) string {
	if hdr.Typeflag == tar.TypeSymlink || hdr.Typeflag == tar.TypeLink {
		return hdr.Linkname
	}
	return ""
}

// add records the member hdr describes under name, replacing any earlier
// one of that name, as unpacking the tar would.
func (a *tarArchive) add(name string, hdr *tar.Header) *tarMember {
	m := &tarMember{name: name, typ: hdr.Typeflag, size: hdr.Size}
	switch hdr.Typeflag {
	case tar.TypeReg:
		if isSparse(hdr) {
			m.typ, m.what = 0, "a sparse file, which no image archive holds"
		}
	case tar.TypeDir:
		m.size = 0
	case tar.TypeSymlink:
		m.link, m.size = hdr.Linkname, 0
	case tar.TypeLink:
		// A hard link is another name for an earlier member, which
		// must be a regular file.
		target := a.members[strings.TrimPrefix(path.Clean("/"+hdr.Linkname), "/")]
		if target == nil || target.typ != tar.TypeReg {
			m.typ, m.what = 0, fmt.Sprintf("a hard link to %q, which names no regular file before it", shownName(hdr.Linkname))
			break
		}
		copied := *target
		copied.name = name
		m = &copied
	case tar.TypeChar:
		m.typ, m.what = 0, "a character device, not a regular file"
	case tar.TypeBlock:
		m.typ, m.what = 0, "a block device, not a regular file"
	case tar.TypeFifo:
		m.typ, m.what = 0, "a FIFO, not a regular file"
	default:
		m.typ, m.what = 0, fmt.Sprintf("a member of tar type %q, not a regular file", hdr.Typeflag)
	}
	a.members[name] = m
	return m
}

// isSparse tells whether hdr is a sparse file, whose contents in the
// archive are not its contents. No tool writes image archives with them.
func isSparse(hdr *tar.Header) bool {
	if hdr.Typeflag == tar.TypeGNUSparse {
		return true
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

// documentKindOf returns the kind of document a member of this name is,
// if it is one that is known by name alone; the size of other members
// is checked when they are read, against their descriptors.
func documentKindOf(name string) documentKind {
	switch {
	case name == "oci-layout" || name == "index.json" || name == "manifest.json" || name == "repositories":
		return layoutDocument
	case strings.HasSuffix(name, ".json") || path.Base(name) == "json" || path.Base(name) == "VERSION":
		return configDocument
	}
	return documentKind{}
}

// copyMember copies the contents of m, read from r, to a new file in dir.
// The copy counts against the import's budget as a layer's files do, so
// it keeps the store's reserve of free space (Options.MinFreeSpace); a
// member that the filesystem has no room for beside the reserve is
// refused before anything of it is written.
func (a *tarArchive) copyMember(ctx context.Context, r io.Reader, m *tarMember, dir, name string) error {
	b := importBudgetFrom(ctx)
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return &os.PathError{Op: "statfs", Path: dir, Err: err}
	}
	var reserve int64
	if b != nil {
		reserve = b.limits.reserve(&st)
	}
	if free := int64(st.Bavail) * st.Bsize; m.size > free-reserve {
		return fmt.Errorf("%w: %d bytes to unpack, and the store's filesystem has %s free and keeps %s in reserve: %w", ErrNoSpace, m.size, formatBytes(free), formatBytes(reserve), unix.ENOSPC)
	}
	p := filepath.Join(dir, name)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	var w io.Writer = f
	if b != nil {
		w = budgetWriter{f: f, b: b}
	}
	_, err = io.CopyN(w, r, m.size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(p)
		return err
	}
	m.copy = p
	return nil
}

// open opens the regular member name, resolving symlinks in the table.
func (a *tarArchive) open(name string) (*memberFile, error) {
	m, err := a.resolve(name)
	if err != nil {
		return nil, err
	}
	switch {
	case m.typ == tar.TypeDir:
		return nil, unsafeMember(name, "a directory, not a regular file")
	case m.typ != tar.TypeReg:
		// resolve follows symlinks, so this is what add found wrong.
		return nil, unsafeMember(name, m.what)
	case m.size == 0:
		return &memberFile{Reader: strings.NewReader(""), size: 0}, nil
	case m.copy != "":
		f, err := os.Open(m.copy)
		if err != nil {
			return nil, err
		}
		return &memberFile{Reader: f, size: m.size, closer: f}, nil
	case a.inPlace:
		return &memberFile{Reader: io.NewSectionReader(a.src, m.offset, m.size), size: m.size}, nil
	}
	return nil, fmt.Errorf("%s: contents not kept", shownName(name))
}

// resolve finds the member that name leads to, following symlinks as the
// kernel would in a tree unpacked from the archive, but refusing any that
// leads outside it: an absolute target, or ".." above the root. Like the
// kernel it gives up on paths longer than PATH_MAX, which keeps the work
// bounded whatever names and links an archive holds.
func (a *tarArchive) resolve(name string) (*tarMember, error) {
	outside := func() error {
		return unsafeMember(name, "leads outside the archive")
	}
	if len(name) > unix.PathMax {
		return nil, unsafeMember(name, fmt.Sprintf("name longer than %d bytes", unix.PathMax))
	}
	cur := "" // resolved so far: no symlinks, no dots
	rest := strings.Split(name, "/")
	for hops := 0; len(rest) > 0; {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if cur == "" {
				return nil, outside()
			}
			cur, _, _ = cutLast(cur, "/")
			continue
		}
		next := c
		if cur != "" {
			next = cur + "/" + c
		}
		if len(next) > unix.PathMax {
			return nil, unsafeMember(name, fmt.Sprintf("leads to a name longer than %d bytes", unix.PathMax))
		}
		m := a.members[next]
		if m == nil || m.typ != tar.TypeSymlink {
			cur = next
			continue
		}
		if hops++; hops > maxSymlinkHops || path.IsAbs(m.link) || len(m.link) > unix.PathMax {
			return nil, outside()
		}
		rest = append(strings.Split(m.link, "/"), rest...)
	}
	m := a.members[cur]
	if m == nil {
		return nil, &fs.PathError{Op: "open", Path: shownName(name), Err: fs.ErrNotExist}
	}
	return m, nil
}

// cutLast is strings.Cut at the last sep; before is "" if there is none.
func cutLast(s, sep string) (before, after string, found bool) {
	if i := strings.LastIndex(s, sep); i >= 0 {
		return s[:i], s[i+len(sep):], true
	}
	return "", s, false
}

func (a *tarArchive) close() { a.src.Close() }

// isArchiveMemberName tells whether name is one an image archive holds
// (beside its index and manifests): a blob of an OCI layout, the
// repositories file, or the <hex>/…, <hex>.json and <hex>.tar members of
// a docker archive (the last as skopeo and podman write).
func isArchiveMemberName(name string) bool {
	if name == "blobs" || strings.HasPrefix(name, "blobs/") || name == "repositories" {
		return true
	}
	first, _, _ := strings.Cut(name, "/")
	if first == name {
		first = strings.TrimSuffix(strings.TrimSuffix(first, ".json"), ".tar")
	}
	return len(first) == 64 && isHex(first)
}
