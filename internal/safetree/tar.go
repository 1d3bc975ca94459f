package safetree

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
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
	w  io.Writer
	tw *tar.Writer
}

// NewTarWriter returns a TarWriter to w. Close finishes the stream.
func NewTarWriter(w io.Writer) *TarWriter { return &TarWriter{w: w, tw: tar.NewWriter(w)} }

// Write adds e to the stream. A regular file's data is read from its
// Content, exactly Size bytes. A file from a directory (an *os.File)
// with holes is written as a sparse member, without them, so that a
// terabyte of holes is not a terabyte of zeros in the stream.
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
	if f, ok := e.Content.(*os.File); ok && h.Typeflag == tar.TypeReg {
		segs, err := dataSegments(f, e.Size)
		if err != nil {
			return pathError("archive", e.Name, err)
		}
		if segs != nil {
			return t.writeSparse(ctx, h, f, segs)
		}
		// Read from the start whatever the file's offset now.
		e = &Entry{Name: e.Name, Size: e.Size, Content: io.NewSectionReader(f, 0, e.Size)}
	}
	if err := t.tw.WriteHeader(h); err != nil {
		return pathError("archive", e.Name, err)
	}
	if h.Typeflag != tar.TypeReg {
		return nil
	}
	return t.copyFile(ctx, e)
}

// writeSparse writes the file f, whose data is segs, as a sparse member
// in GNU tar's PAX format 1.0, which archive/tar, GNU tar and bsdtar read:
// a map of the data's offsets and lengths, then the data, without the
// holes.
//
// archive/tar reads this format but does not write it, and drops the
// records that make it: the headers are made by archive/tar with
// stand-ins for those records' keys, of the same length, renamed in the
// extended header's records before they are written.
func (t *TarWriter) writeSparse(ctx context.Context, h *tar.Header, f *os.File, segs []segment) error {
	var m strings.Builder
	fmt.Fprintf(&m, "%d\n", len(segs))
	var data int64
	for _, s := range segs {
		fmt.Fprintf(&m, "%d\n%d\n", s.off, s.len)
		data += s.len
	}
	for m.Len()%512 != 0 {
		m.WriteByte(0)
	}
	name := h.Name
	h.PAXRecords = map[string]string{
		standIn + "major": "1", standIn + "minor": "0",
		standIn + "name": name, standIn + "realsize": strconv.FormatInt(h.Size, 10),
	}
	h.Name = path.Join(path.Dir(name), "GNUSparseFile.0", path.Base(name))
	h.Size = int64(m.Len()) + data
	var hdr bytes.Buffer
	htw := tar.NewWriter(&hdr)
	if err := htw.WriteHeader(h); err != nil {
		return pathError("archive", name, err)
	}
	raw, err := renameStandIns(hdr.Bytes())
	if err != nil {
		return pathError("archive", name, err)
	}
	if err := t.tw.Flush(); err != nil {
		return pathError("archive", name, err)
	}
	if _, err := t.w.Write(raw); err != nil {
		return pathError("archive", name, err)
	}
	if _, err := io.WriteString(t.w, m.String()); err != nil {
		return pathError("archive", name, err)
	}
	for _, s := range segs {
		if err := copyN(ctx, t.w, io.NewSectionReader(f, s.off, s.len), s.len); err != nil {
			return pathError("archive", name, err)
		}
	}
	if pad := data % 512; pad != 0 {
		if _, err := t.w.Write(make([]byte, 512-pad)); err != nil {
			return pathError("archive", name, err)
		}
	}
	return nil
}

// standIn stands for "GNU.sparse." in the records archive/tar is given.
const standIn = "GNU.sparsX."

// renameStandIns renames the stand-in keys in raw, the blocks of an
// extended header and of the header it extends, as archive/tar wrote
// them. Only keys are renamed, record by record: a name may hold anything.
func renameStandIns(raw []byte) ([]byte, error) {
	if len(raw) < 3*512 || raw[156] != tar.TypeXHeader {
		return nil, errors.New("archive/tar wrote no extended header for a sparse file")
	}
	size, err := strconv.ParseInt(strings.TrimRight(strings.TrimSpace(string(raw[124:136])), "\x00"), 8, 64)
	if err != nil || 512+size > int64(len(raw)) {
		return nil, errors.New("archive/tar wrote an extended header of no size")
	}
	recs := raw[512 : 512+size]
	for len(recs) > 0 {
		sp := bytes.IndexByte(recs, ' ')
		if sp < 0 {
			return nil, errors.New("malformed extended header")
		}
		n, err := strconv.Atoi(string(recs[:sp]))
		if err != nil || n <= sp || n > len(recs) {
			return nil, errors.New("malformed extended header")
		}
		if bytes.HasPrefix(recs[sp+1:n], []byte(standIn)) {
			copy(recs[sp+1:], "GNU.sparse.")
		}
		recs = recs[n:]
	}
	return raw, nil
}

// copyN copies n bytes of r to w, checking ctx between chunks; fewer is
// an error.
func copyN(ctx context.Context, w io.Writer, r io.Reader, n int64) error {
	buf := make([]byte, chunk)
	for n > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		m, err := io.ReadFull(r, buf[:min(int64(len(buf)), n)])
		if m > 0 {
			if _, werr := w.Write(buf[:m]); werr != nil {
				return werr
			}
			n -= int64(m)
		}
		if err != nil && n > 0 {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				err = fmt.Errorf("the file shrank while it was copied: %w", io.ErrUnexpectedEOF)
			}
			return err
		}
	}
	return nil
}

// A segment is a range of a file that holds data.
type segment struct{ off, len int64 }

// Sparse files are archived with at most maxSegments ranges of data;
// holes shorter than minHole are archived as zeros, as part of the data
// around them.
const (
	maxSegments = 1 << 16
	minHole     = 64 << 10
)

// dataSegments returns the ranges of data of f below size, or nil if it
// has no holes worth keeping (or the filesystem cannot say). A file too
// fragmented to archive sparsely within maxSegments is an error: its
// zeros could make a stream far larger than its data.
func dataSegments(f *os.File, size int64) ([]segment, error) {
	fd := int(f.Fd())
	var segs []segment
	var data int64
	for off := int64(0); off < size; {
		start, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break
		}
		if err != nil {
			return nil, nil // no SEEK_DATA here: archived whole
		}
		end, err := unix.Seek(fd, start, unix.SEEK_HOLE)
		if err != nil {
			return nil, nil
		}
		end = min(end, size)
		if start >= end {
			break
		}
		if n := len(segs); n > 0 && start-(segs[n-1].off+segs[n-1].len) < minHole {
			data += end - (segs[n-1].off + segs[n-1].len)
			segs[n-1].len = end - segs[n-1].off
		} else {
			if len(segs) == maxSegments {
				return nil, fmt.Errorf("%w: a sparse file of more than %d ranges of data", ErrUnsafeEntry, maxSegments)
			}
			segs = append(segs, segment{start, end - start})
			data += end - start
		}
		off = end
	}
	if size-data < minHole {
		return nil, nil
	}
	// GNU tar takes a file's size from where its last data ends: a
	// hole at the end is marked with an empty range there.
	if n := len(segs); n == 0 || segs[n-1].off+segs[n-1].len < size {
		segs = append(segs, segment{size, 0})
	}
	return segs, nil
}

func (t *TarWriter) copyFile(ctx context.Context, e *Entry) error {
	if err := copyN(ctx, t.tw, e.Content, e.Size); err != nil {
		return pathError("archive", e.Name, err)
	}
	return nil
}

// Close writes the end of the stream; the writer under it stays open.
func (t *TarWriter) Close() error { return t.tw.Close() }
