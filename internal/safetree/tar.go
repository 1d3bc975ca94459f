package safetree

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// ReadTar calls fn with each entry of the tar stream r, named relative to
// where it is unpacked: a leading "/" is dropped (absolute names are
// rebased), and a name or hard link that climbs out with ".." is refused
// with ErrUnsafeEntry, as is a kind of entry tar has but a tree has not.
// A regular file's Content is the stream, valid while fn runs. Entries
// naming the destination itself (".") are skipped.
func ReadTar(ctx context.Context, r io.Reader, fn func(*Entry) error) error {
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read tar: %w", err)
		}
		if h.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		name, ok := tarName(h.Name)
		if !ok {
			return pathError("unpack", h.Name, fmt.Errorf("%w: the name leaves the destination", ErrUnsafeEntry))
		}
		if name == "." {
			continue
		}
		e := &Entry{
			Name: name, Mode: uint32(h.Mode) & 0o7777, UID: h.Uid, GID: h.Gid, Size: h.Size,
			ModTime: h.ModTime, DevMajor: uint32(h.Devmajor), DevMinor: uint32(h.Devminor),
		}
		switch h.Typeflag {
		case tar.TypeReg, tar.TypeRegA:
			e.Mode |= unix.S_IFREG
			e.Content = tr
		case tar.TypeDir:
			e.Mode |= unix.S_IFDIR
		case tar.TypeSymlink:
			e.Mode |= unix.S_IFLNK
			e.Linkname = h.Linkname
		case tar.TypeLink:
			target, ok := tarName(h.Linkname)
			if !ok || target == "." {
				return pathError("unpack", h.Name, fmt.Errorf("%w: hard link to %q, outside the destination", ErrUnsafeEntry, h.Linkname))
			}
			e.Mode |= unix.S_IFREG
			e.HardLink, e.Size = target, 0
		case tar.TypeChar:
			e.Mode |= unix.S_IFCHR
		case tar.TypeBlock:
			e.Mode |= unix.S_IFBLK
		case tar.TypeFifo:
			e.Mode |= unix.S_IFIFO
		default:
			return pathError("unpack", h.Name, fmt.Errorf("%w: tar entry type %q", ErrUnsafeEntry, h.Typeflag))
		}
		if err := fn(e); err != nil {
			return err
		}
	}
}

// tarName cleans a tar member's name into one relative to the
// destination: a leading "/" goes, and ok is false if the name climbs
// above the destination with "..", which is refused rather than quietly
// rebased.
func tarName(name string) (clean string, ok bool) {
	clean = path.Clean(strings.TrimLeft(name, "/"))
	if clean == ".." || strings.HasPrefix(clean, "../") {
		return "", false
	}
	return clean, true
}

// A TarWriter writes entries to a tar stream.
type TarWriter struct {
	tw *tar.Writer
}

// NewTarWriter returns a TarWriter to w. Close finishes the stream.
func NewTarWriter(w io.Writer) *TarWriter { return &TarWriter{tw: tar.NewWriter(w)} }

// Write adds e to the stream. A regular file's data is read from its
// Content, exactly Size bytes, holes as zeros: tar has no sparse form
// that archive/tar writes.
func (t *TarWriter) Write(ctx context.Context, e *Entry) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if e.Name == "" {
		return nil // the directory the stream is of
	}
	h := &tar.Header{
		Name: e.Name, Mode: int64(e.Mode & 0o7777), Uid: e.UID, Gid: e.GID,
		ModTime: e.ModTime, Format: tar.FormatPAX,
	}
	switch e.Type() {
	case unix.S_IFREG:
		h.Typeflag, h.Size = tar.TypeReg, e.Size
		if e.HardLink != "" {
			h.Typeflag, h.Size, h.Linkname = tar.TypeLink, 0, e.HardLink
		}
	case unix.S_IFDIR:
		h.Typeflag, h.Name = tar.TypeDir, e.Name+"/"
	case unix.S_IFLNK:
		h.Typeflag, h.Linkname = tar.TypeSymlink, e.Linkname
	default:
		return pathError("archive", e.Name, fmt.Errorf("%w: %s", ErrUnsafeEntry, e.Kind()))
	}
	if err := t.tw.WriteHeader(h); err != nil {
		return pathError("archive", e.Name, err)
	}
	if h.Typeflag != tar.TypeReg {
		return nil
	}
	return t.copyFile(ctx, e)
}

func (t *TarWriter) copyFile(ctx context.Context, e *Entry) error {
	buf := make([]byte, chunk)
	for n := e.Size; n > 0; {
		if err := ctx.Err(); err != nil {
			return err
		}
		m, err := io.ReadFull(e.Content, buf[:min(int64(len(buf)), n)])
		if m > 0 {
			if _, werr := t.tw.Write(buf[:m]); werr != nil {
				return pathError("archive", e.Name, werr)
			}
			n -= int64(m)
		}
		if err != nil && n > 0 {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				err = fmt.Errorf("the file shrank while it was copied: %w", io.ErrUnexpectedEOF)
			}
			return pathError("archive", e.Name, err)
		}
	}
	return nil
}

// Close writes the end of the stream; the writer under it stays open.
func (t *TarWriter) Close() error { return t.tw.Close() }
