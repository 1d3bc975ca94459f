package safetree

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// chunk is how much data is copied between checks of the context, and
// the size of the runs of zeros that become holes.
const chunk = 64 << 10

// copyData writes size bytes of src to dst, which is empty, keeping holes:
// from a file, only the ranges SEEK_DATA finds are read (a sparse file of a
// terabyte costs its data, not a terabyte); from a stream, runs of zeros
// are skipped. ctx is checked between chunks.
func copyData(ctx context.Context, dst *os.File, src io.Reader, size int64) error {
	w := &sparseWriter{f: dst}
	if f, ok := src.(*os.File); ok {
		if err := copyFileData(ctx, w, f, size); !errors.Is(err, errors.ErrUnsupported) {
			return err
		}
	}
	if err := copyStream(ctx, w, src, size); err != nil {
		return err
	}
	return dst.Truncate(size)
}

// copyFileData copies the data ranges of f below size, and sets the size.
func copyFileData(ctx context.Context, w *sparseWriter, f *os.File, size int64) error {
	fd := int(f.Fd())
	for off := int64(0); off < size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole from here on
		}
		if errors.Is(err, unix.EINVAL) && off == 0 {
			return errors.ErrUnsupported
		}
		if err != nil {
			return err
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return err
		}
		hole = min(hole, size)
		if data >= hole {
			break
		}
		w.off = data
		if err := copyStream(ctx, w, io.NewSectionReader(f, data, hole-data), hole-data); err != nil {
			return err
		}
		off = hole
	}
	return w.f.Truncate(size)
}

// copyStream copies exactly n bytes of r through w.
func copyStream(ctx context.Context, w *sparseWriter, r io.Reader, n int64) error {
	buf := make([]byte, chunk)
	for n > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		m, err := io.ReadFull(r, buf[:min(int64(len(buf)), n)])
		if m > 0 {
			if werr := w.write(buf[:m]); werr != nil {
				return werr
			}
			n -= int64(m)
		}
		if err != nil {
			if n > 0 && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) {
				return fmt.Errorf("the file shrank while it was copied: %w", io.ErrUnexpectedEOF)
			}
			if n > 0 {
				return err
			}
		}
	}
	return nil
}

// sparseWriter writes at increasing offsets of f, leaving holes for
// chunks of zeros.
type sparseWriter struct {
	f   *os.File
	off int64
}

func (w *sparseWriter) write(p []byte) error {
	if !allZero(p) {
		if _, err := w.f.WriteAt(p, w.off); err != nil {
			return err
		}
	}
	w.off += int64(len(p))
	return nil
}

func allZero(p []byte) bool {
	for _, b := range p {
		if b != 0 {
			return false
		}
	}
	return true
}
