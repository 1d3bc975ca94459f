package layerfs

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/clip"
)

// ErrMemberTooLarge means a member of an image layout or archive is larger
// than anything of its kind could be, or than its descriptor says.
var ErrMemberTooLarge = errors.New("archive member too large")

// unsafeMemberError is ErrUnsafeEntry said of a member of an archive.
type unsafeMemberError struct{ name, why string }

func (e *unsafeMemberError) Error() string {
	return fmt.Sprintf("archive member %q: %s", shownName(e.name), e.why)
}

func (e *unsafeMemberError) Is(target error) bool { return target == ErrUnsafeEntry }

// unsafeMember returns the error refusing the member name for why.
func unsafeMember(name, why string) error { return &unsafeMemberError{name: name, why: why} }

// A documentKind is a kind of JSON document an import reads whole, with
// the most it will read of one. Real indexes and manifests are a few KiB
// (registries refuse manifests over 4 MiB); configs carry the image's
// history and labels and can be larger.
type documentKind struct {
	what string
	max  int64
}

var (
	layoutDocument   = documentKind{"a layout file", 4 << 20}       // oci-layout, index.json, a docker archive's manifest.json
	manifestDocument = documentKind{"a manifest or index", 4 << 20} // a blob an index or manifest points to
	configDocument   = documentKind{"an image config", 8 << 20}
)

// A memberSource holds the files of an image layout or archive: a
// directory (dirMembers) or a tar (tarArchive).
type memberSource interface {
	// open opens the member name (slash-separated, relative to the
	// archive's root) for reading. It follows symlinks only while they
	// stay inside the archive and opens only regular files: anything
	// else fails with ErrUnsafeEntry, naming the member and what it is.
	open(name string) (*memberFile, error)
}

// A memberFile is an open member of known size.
type memberFile struct {
	io.Reader
	size   int64
	closer io.Closer // nil if there is nothing to close
}

func (f *memberFile) Close() error {
	if f.closer == nil {
		return nil
	}
	return f.closer.Close()
}

// dirMembers is an image layout or archive unpacked in a directory, as an
// OCI layout usually is.
type dirMembers string

// open opens name beneath the directory. An archive is untrusted, and a
// directory of one can hold symlinks, FIFOs and device nodes: a member is
// followed through symlinks only while they stay inside the directory,
// opened without blocking, and must be a regular file, so that it can
// neither make the import read the host's files or devices nor hang it on
// a FIFO.
func (d dirMembers) open(name string) (*memberFile, error) {
	root, err := unix.Open(string(d), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: string(d), Err: err}
	}
	defer unix.Close(root)
	fd, err := openat2(root, name, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NONBLOCK | unix.O_NOCTTY,
		Resolve: resolveBeneath,
	})
	switch {
	case err == unix.EXDEV || err == unix.ELOOP:
		return nil, unsafeMember(name, "leads outside the archive")
	case err != nil:
		return nil, &os.PathError{Op: "open", Path: shownName(name), Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "fstat", Path: shownName(name), Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, unsafeMember(name, fileTypeName(st.Mode)+", not a regular file")
	}
	f := os.NewFile(uintptr(fd), name)
	return &memberFile{Reader: f, size: st.Size, closer: f}, nil
}

// fileTypeName names the type of file that mode (a stat's st_mode) is.
func fileTypeName(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFLNK:
		return "a symlink"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFSOCK:
		return "a socket"
	}
	return fmt.Sprintf("a file of type %#o", mode&unix.S_IFMT)
}

// openSized opens the member name, which its descriptor says is want
// bytes (0 if unknown, as a docker archive never says), and checks the
// size before anything is read: a blob whose size differs from its
// descriptor's cannot have the promised digest, and reading it through
// to find out could take as long as the file is large.
func openSized(src memberSource, name string, want int64) (*memberFile, error) {
	return openChecked(src, name, want, documentKind{})
}

// openChecked is openSized for a member that is also a document of kind
// kind (the zero kind for none), which a size beyond its kind's refuses.
func openChecked(src memberSource, name string, want int64, kind documentKind) (*memberFile, error) {
	if want < 0 {
		return nil, fmt.Errorf("%s: descriptor gives a negative size, %d", shownName(name), want)
	}
	f, err := src.open(name)
	if err != nil {
		return nil, err
	}
	switch {
	case kind.max > 0 && f.size > kind.max:
		f.Close()
		return nil, fmt.Errorf("%w: %s is %d bytes, and %s may be at most %d", ErrMemberTooLarge, shownName(name), f.size, kind.what, kind.max)
	case want > 0 && f.size != want:
		f.Close()
		return nil, fmt.Errorf("%s is %d bytes, its descriptor says %d: %w", shownName(name), f.size, want, ErrDigestMismatch)
	}
	// A file that grows while it is read stops at the size it had.
	f.Reader = io.LimitReader(f.Reader, f.size)
	return f, nil
}

// readDocument returns the contents of the JSON document name, of kind
// kind and want bytes (0 if unknown); see openSized. The size is checked
// before anything is read.
func readDocument(src memberSource, name string, kind documentKind, want int64) ([]byte, error) {
	f, err := openChecked(src, name, want, kind)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, f.size)
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, fmt.Errorf("read %s: %w", shownName(name), err)
	}
	return b, nil
}

// decodeJSON decodes the document name into v. Its errors name the
// document and where it went wrong but quote none of its bytes, which a
// caller might show to someone who is not to see them.
func decodeJSON(name string, b []byte, v any) error {
	err := json.Unmarshal(b, v)
	if err == nil {
		return nil
	}
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax):
		return fmt.Errorf("%s: not valid JSON (at byte %d)", shownName(name), syntax.Offset)
	case errors.As(err, &typ):
		if typ.Field == "" {
			return fmt.Errorf("%s: a JSON value that cannot be a %s (at byte %d)", shownName(name), typ.Type, typ.Offset)
		}
		return fmt.Errorf("%s: field %s cannot be a %s (at byte %d)", shownName(name), typ.Field, typ.Type, typ.Offset)
	}
	// Other errors come from the fields' own decoders (a digest that
	// does not parse, say), which quote the value.
	return fmt.Errorf("%s: a field's value is malformed", shownName(name))
}

// maxShownName bounds the names from an archive that errors and logs
// show: a manifest can name a member with megabytes.
const maxShownName = 200

// shownName is name as errors show it, cut to maxShownName bytes.
func shownName(name string) string { return clip.Cut(name, maxShownName) }

// isNotFound tells whether err says a member does not exist.
func isNotFound(err error) bool { return errors.Is(err, fs.ErrNotExist) }
