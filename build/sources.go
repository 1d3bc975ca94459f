package build

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/bzip2"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
)

// ErrNoSource means a COPY or ADD source matches nothing in the context.
var ErrNoSource = errors.New("no such file in the build context")

// epoch is the time of every entry copied from the context, so that the
// same files make the same layer whenever and wherever they are built.
var epoch = time.Unix(0, 0).UTC()

// A sourceSet is what a COPY or ADD takes from the context, as a tar of
// entries named relative to the destination directory, held in an
// unlinked temporary file. Its digest covers every name, mode, owner
// and byte, and keys the build cache.
type sourceSet struct {
	file   *os.File
	digest string
	// single is set when the sources are one file (not a directory and
	// not an unpacked archive): a destination without a trailing slash
	// that is not a directory in the image then names the file itself.
	single bool
}

func (s *sourceSet) Close() error { return s.file.Close() }

// collectSources reads srcs from the context into a sourceSet. With add,
// a local tar archive (plain, gzip, bzip2 or zstd) is unpacked rather
// than copied.
//
// The tar is staged in tmpDir (the store's, so that it lands on the disk
// the layer is bound for rather than in a /tmp that may be memory) and
// may not pass max bytes: an archive that unpacks without end stops
// there.
func collectSources(c *buildContext, srcs []string, add bool, tmpDir string, max int64) (_ *sourceSet, err error) {
	if err := os.MkdirAll(tmpDir, 0o700); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(tmpDir, ".tmp-sources-*")
	if err != nil {
		return nil, err
	}
	os.Remove(f.Name())
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	h := sha256.New()
	sw := &sourceWriter{c: c, tw: tar.NewWriter(&boundedWriter{w: io.MultiWriter(f, h), left: max}), h: h}
	var files, others int
	for _, src := range srcs {
		rel, err := contextPath(src)
		if err != nil {
			return nil, err
		}
		matches := []string{rel}
		if hasGlob(rel) {
			if matches, err = c.glob(rel); err != nil {
				return nil, err
			}
		} else if c.ignored(rel) {
			matches = nil
		}
		if len(matches) == 0 {
			return nil, fmt.Errorf("%s: %w", src, ErrNoSource)
		}
		for _, m := range matches {
			isFile, err := sw.addSource(m, add)
			if err != nil {
				if errors.Is(err, unix.ENOENT) {
					return nil, fmt.Errorf("%s: %w", src, ErrNoSource)
				}
				return nil, err
			}
			if isFile {
				files++
			} else {
				others++
			}
		}
	}
	if err := sw.tw.Close(); err != nil {
		return nil, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return &sourceSet{file: f, digest: hex.EncodeToString(h.Sum(nil)), single: files == 1 && others == 0}, nil
}

type sourceWriter struct {
	c  *buildContext
	tw *tar.Writer
	h  hash.Hash
}

// addSource adds the context path rel: a directory's contents, or a
// file (or, with add, an archive's entries). A link named as a source
// is followed, inside the context; links within a directory are copied
// as links. It reports whether rel was copied as one file.
func (sw *sourceWriter) addSource(rel string, add bool) (bool, error) {
	f, err := sw.c.open(rel, unix.O_PATH)
	if err != nil {
		return false, err
	}
	var st unix.Stat_t
	err = unix.Fstat(int(f.Fd()), &st)
	f.Close()
	if err != nil {
		return false, err
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return false, sw.addDir(rel, "")
	case unix.S_IFREG:
		if add {
			unpacked, err := sw.addArchive(rel)
			if err != nil || unpacked {
				return false, err
			}
		}
		return true, sw.addFile(rel, path.Base(rel), &st)
	}
	return false, fmt.Errorf("%s: not a file or directory", rel)
}

// addDir adds the entries under the context directory rel, named under
// prefix, in sorted order.
func (sw *sourceWriter) addDir(rel, prefix string) error {
	names, err := sw.c.readDir(rel)
	if err != nil {
		return err
	}
	for _, name := range names {
		crel, cname := path.Join(rel, name), path.Join(prefix, name)
		var st unix.Stat_t
		if err := sw.c.lstat(crel, &st); err != nil {
			return err
		}
		isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
		if sw.c.ignored(crel) {
			// An ignored directory is looked into only for what an
			// exception ("!pattern") brings back; it is not itself
			// copied.
			if isDir && sw.c.ignore.Exclusions() {
				if err := sw.addDir(crel, cname); err != nil {
					return err
				}
			}
			continue
		}
		hdr := &tar.Header{Name: cname, Mode: int64(st.Mode & 0o7777), ModTime: epoch, Format: tar.FormatPAX}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			hdr.Typeflag, hdr.Name = tar.TypeDir, cname+"/"
			if err := sw.tw.WriteHeader(hdr); err != nil {
				return err
			}
			if err := sw.addDir(crel, cname); err != nil {
				return err
			}
		case unix.S_IFREG:
			if err := sw.addFile(crel, cname, &st); err != nil {
				return err
			}
		case unix.S_IFLNK:
			target, err := sw.c.readlink(crel)
			if err != nil {
				return err
			}
			hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, target
			if err := sw.tw.WriteHeader(hdr); err != nil {
				return err
			}
		case unix.S_IFIFO:
			hdr.Typeflag = tar.TypeFifo
			if err := sw.tw.WriteHeader(hdr); err != nil {
				return err
			}
		case unix.S_IFSOCK:
			// Sockets cannot be copied, and Docker leaves them out.
		default:
			return fmt.Errorf("%s: a device node cannot be copied from the context", crel)
		}
	}
	return nil
}

// addFile adds the regular file rel as name. The file is opened again,
// inside the context, and must still be the file st describes: one
// swapped for another, or for a FIFO or a device, between the listing
// and the read fails the build instead of being copied.
func (sw *sourceWriter) addFile(rel, name string, st *unix.Stat_t) error {
	f, err := sw.c.openRegular(rel)
	if err != nil {
		return err
	}
	defer f.Close()
	var now unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &now); err != nil {
		return err
	}
	if now.Ino != st.Ino || now.Dev != st.Dev {
		return fmt.Errorf("%s: changed while the build read it", rel)
	}
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: int64(now.Mode & 0o7777), Size: now.Size, ModTime: epoch, Format: tar.FormatPAX}
	if err := sw.tw.WriteHeader(hdr); err != nil {
		return err
	}
	if n, err := io.CopyN(sw.tw, f, now.Size); err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%s: shrank from %d to %d bytes while the build read it", rel, now.Size, n)
		}
		return fmt.Errorf("%s: %w", rel, err)
	}
	return nil
}

// addArchive adds the entries of rel if it is a tar archive, plain or
// compressed, as ADD unpacks it. Entry names are taken as relative to
// the destination, ".." cannot climb above it, and only files,
// directories, links and FIFOs are taken; the store's unpack confines
// links as it does any layer's.
func (sw *sourceWriter) addArchive(rel string) (bool, error) {
	f, err := sw.c.openRegular(rel)
	if err != nil {
		return false, err
	}
	defer f.Close()
	br := bufio.NewReader(f)
	magic, _ := br.Peek(6)
	var r io.Reader = br
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return false, fmt.Errorf("%s: %w", rel, err)
		}
		defer zr.Close()
		r = zr
	case bytes.HasPrefix(magic, []byte("BZh")):
		r = bzip2.NewReader(br)
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(br)
		if err != nil {
			return false, fmt.Errorf("%s: %w", rel, err)
		}
		defer zr.Close()
		r = zr
	case bytes.HasPrefix(magic, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		return false, fmt.Errorf("%s: xz archives: %w", rel, ErrUnsupported)
	}
	tb := bufio.NewReaderSize(r, 1024)
	head, _ := tb.Peek(512)
	if len(head) < 262 || !bytes.Equal(head[257:262], []byte("ustar")) {
		if r != io.Reader(br) {
			return false, fmt.Errorf("%s: compressed, but not a tar archive", rel)
		}
		return false, nil // a plain file: copied as it is, as Docker does
	}
	tr := tar.NewReader(tb)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return true, nil
		}
		if err != nil {
			return false, fmt.Errorf("%s: %w", rel, err)
		}
		name := confine(hdr.Name)
		if name == "" {
			continue
		}
		out := &tar.Header{Name: name, Mode: hdr.Mode & 0o7777, Uid: hdr.Uid, Gid: hdr.Gid, ModTime: hdr.ModTime, Format: tar.FormatPAX}
		switch hdr.Typeflag {
		case tar.TypeReg, tar.TypeRegA:
			out.Typeflag, out.Size = tar.TypeReg, hdr.Size
		case tar.TypeDir:
			out.Typeflag, out.Name = tar.TypeDir, name+"/"
		case tar.TypeSymlink:
			out.Typeflag, out.Linkname = tar.TypeSymlink, hdr.Linkname
		case tar.TypeLink:
			out.Typeflag, out.Linkname = tar.TypeLink, confine(hdr.Linkname)
		case tar.TypeFifo:
			out.Typeflag = tar.TypeFifo
		default:
			return false, fmt.Errorf("%s: entry %q: type %q cannot be added", rel, name, hdr.Typeflag)
		}
		if err := sw.tw.WriteHeader(out); err != nil {
			return false, err
		}
		if out.Typeflag == tar.TypeReg {
			if _, err := io.CopyN(sw.tw, tr, hdr.Size); err != nil {
				return false, fmt.Errorf("%s: %s: %w", rel, name, err)
			}
		}
	}
}

// confine is an archive entry's name as a path under the destination:
// absolute names and ".." are resolved as if the destination were "/".
func confine(name string) string {
	return strings.TrimPrefix(path.Clean("/"+name), "/")
}

// ErrTooLarge means what a COPY or ADD copies passes Options.MaxCopySize.
var ErrTooLarge = errors.New("sources larger than the build allows")

// boundedWriter fails a write that would pass its bound.
type boundedWriter struct {
	w    io.Writer
	left int64
}

func (b *boundedWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > b.left {
		return 0, ErrTooLarge
	}
	b.left -= int64(len(p))
	return b.w.Write(p)
}
