package layerfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// Default bounds on one import; see Options.
const (
	// DefaultMaxImportSize is 64 GiB. The largest images in common use
	// (CUDA and machine-learning stacks) unpack to 10-20 GiB, and an
	// archive is extracted before its layers: 64 GiB leaves room for both
	// while stopping a compressed layer of a few megabytes that claims
	// terabytes of zeros long before it has cost much.
	DefaultMaxImportSize int64 = 64 << 30
	// DefaultMaxImportEntries is four million: ten times the entries of
	// the largest images in common use (a few hundred thousand), but a
	// bound on a layer of ten million empty files, which costs little to
	// compress and an inode each to unpack.
	DefaultMaxImportEntries int64 = 4_000_000
	// DefaultMinFreeSpace is the space an import leaves free on the
	// store's filesystem: 1 GiB, or 5% of the filesystem where that is
	// less, so that a small store still takes images.
	DefaultMinFreeSpace int64 = 1 << 30
)

// Errors an import's bounds return.
var (
	// ErrImportTooLarge means an import would unpack more than the store
	// allows (Options.MaxImportSize, Options.MaxImportEntries).
	ErrImportTooLarge = errors.New("import exceeds the store's limit")
	// ErrNoSpace means an import would leave less free space, or fewer
	// free inodes, on the store's filesystem than the store keeps in
	// reserve (Options.MinFreeSpace).
	ErrNoSpace = errors.New("not enough free space in the store")
)

// importLimits are a store's bounds on one import, resolved from Options:
// a negative value means none.
type importLimits struct {
	maxBytes   int64
	maxEntries int64
	minFree    int64 // bytes; < 0 checks no free space at all
	root       string
}

func newImportLimits(root string, opts *Options) importLimits {
	orDefault := func(v, def int64) int64 {
		if v == 0 {
			return def
		}
		return v
	}
	return importLimits{
		maxBytes:   orDefault(opts.MaxImportSize, DefaultMaxImportSize),
		maxEntries: orDefault(opts.MaxImportEntries, DefaultMaxImportEntries),
		minFree:    opts.MinFreeSpace,
		root:       root,
	}
}

// An importBudget is what is left of the limits for one import, shared by
// the archive it extracts and every layer it unpacks. It is safe for
// concurrent use.
//
// Two sizes count against maxBytes: the uncompressed tar streams read
// (headers, contents and anything past the end of a tar), which bounds the
// work of decompressing, and the sizes regular files claim, holes
// included, which bounds what a sparse entry of a few bytes can make the
// tar reader produce, and what the layer takes once copied or exported.
// A file is refused at its header, before anything of it is written.
//
// The free space on the store's filesystem is measured as the unpack goes,
// rather than estimated up front, since holes and other writers change it.
type importBudget struct {
	limits importLimits

	mu      sync.Mutex
	stream  int64 // uncompressed bytes read
	files   int64 // sizes of regular files
	entries int64

	// Written since the free space was last measured, and how much may be
	// before it is measured again; set by the first measurement.
	unmeasuredBytes, unmeasuredInodes int64
	stepBytes, stepInodes             int64
	measured                          bool
}

// The most bytes, and entries, an import writes between two measurements
// of the free space, unless the reserve is smaller: it must absorb them.
const (
	freeCheckBytes  = 64 << 20
	freeCheckInodes = 4096
)

type importBudgetKey struct{}

// withImportBudget returns ctx carrying a fresh budget of the store's
// limits, unless it carries one already: an import's archive and its
// layers share one, and so the limits bound the import as a whole.
func (s *Store) withImportBudget(ctx context.Context) context.Context {
	if importBudgetFrom(ctx) != nil {
		return ctx
	}
	return context.WithValue(ctx, importBudgetKey{}, &importBudget{limits: s.limits})
}

// withSpaceBudget returns ctx carrying a budget that keeps only the
// store's reserve of free space, unless it carries one already.
func (s *Store) withSpaceBudget(ctx context.Context) context.Context {
	if importBudgetFrom(ctx) != nil {
		return ctx
	}
	l := importLimits{maxBytes: -1, maxEntries: -1, minFree: s.limits.minFree, root: s.limits.root}
	return context.WithValue(ctx, importBudgetKey{}, &importBudget{limits: l})
}

// importBudgetFrom returns the budget ctx carries, or nil.
func importBudgetFrom(ctx context.Context) *importBudget {
	b, _ := ctx.Value(importBudgetKey{}).(*importBudget)
	return b
}

// addEntry counts one entry that the unpacker is about to create in the
// directory open as fd, a regular file of size bytes or, with size 0,
// anything else.
func (b *importBudget) addEntry(fd int, size int64) error {
	if b == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	l := b.limits
	if l.maxEntries >= 0 && b.entries >= l.maxEntries {
		return fmt.Errorf("%w: more than %d files, directories and links (raise Options.MaxImportEntries, or berth image import --max-files)", ErrImportTooLarge, l.maxEntries)
	}
	if l.maxBytes >= 0 && size > l.maxBytes-b.files {
		return b.tooLarge()
	}
	b.entries++
	b.files += size
	b.unmeasuredInodes++
	return b.checkSpace(fd)
}

// addStream counts n uncompressed bytes read from a tar stream.
func (b *importBudget) addStream(n int64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.limits.maxBytes >= 0 && n > b.limits.maxBytes-b.stream {
		return b.tooLarge()
	}
	b.stream += n
	return nil
}

func (b *importBudget) tooLarge() error {
	return fmt.Errorf("%w: more than %s uncompressed (raise Options.MaxImportSize, or berth image import --max-size)", ErrImportTooLarge, formatBytes(b.limits.maxBytes))
}

// reader returns r counting what is read from it against b: an
// uncompressed tar stream. A nil budget returns r itself.
func (b *importBudget) reader(r io.Reader) io.Reader {
	if b == nil {
		return r
	}
	return &budgetReader{r: r, b: b}
}

type budgetReader struct {
	r io.Reader
	b *importBudget
}

func (br *budgetReader) Read(p []byte) (int, error) {
	n, err := br.r.Read(p)
	if n > 0 {
		if berr := br.b.addStream(int64(n)); berr != nil {
			return 0, berr
		}
	}
	return n, err
}

// wrote notes n bytes written to disk in the directory open as fd.
func (b *importBudget) wrote(fd int, n int64) error {
	if b == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.unmeasuredBytes += n
	return b.checkSpace(fd)
}

// checkSpace measures the free space on fd's filesystem once enough has
// been written since the last time, and refuses to go below the reserve.
// b.mu is held.
func (b *importBudget) checkSpace(fd int) error {
	if b.limits.minFree < 0 {
		return nil
	}
	if b.measured && b.unmeasuredBytes < b.stepBytes && b.unmeasuredInodes < b.stepInodes {
		return nil
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		return fmt.Errorf("store %s: measure free space: %w", b.limits.root, os.NewSyscallError("fstatfs", err))
	}
	reserve := b.limits.reserve(&st)
	// Filesystems that make inodes as they need them report none, as
	// ramfs reports no blocks.
	inodeReserve := min(65536, int64(st.Files)/20)
	if !b.measured {
		b.measured = true
		b.stepBytes = max(64<<10, min(freeCheckBytes, reserve/2))
		b.stepInodes = freeCheckInodes
		if inodeReserve > 0 {
			b.stepInodes = max(1, min(freeCheckInodes, inodeReserve/2))
		}
	}
	b.unmeasuredBytes, b.unmeasuredInodes = 0, 0
	// Bavail leaves out the blocks a filesystem keeps for root, which the
	// store, running as root, could otherwise fill. What is written before
	// the next measurement must fit beside the reserve. A filesystem that
	// reports no blocks at all (ramfs) has no size to measure.
	if free := int64(st.Bavail) * st.Bsize; st.Blocks > 0 && free-b.stepBytes < reserve {
		return fmt.Errorf("%w: %s has %s free and keeps %s in reserve (Options.MinFreeSpace)", ErrNoSpace, b.limits.root, formatBytes(free), formatBytes(reserve))
	}
	if free := int64(st.Ffree); st.Files > 0 && free-b.stepInodes < inodeReserve {
		return fmt.Errorf("%w: %s has %d free inodes and keeps %d in reserve", ErrNoSpace, b.limits.root, free, inodeReserve)
	}
	return nil
}

// reserve returns the bytes to leave free on the filesystem st describes:
// Options.MinFreeSpace, or its default for that filesystem; 0 if the
// store checks no free space.
func (l importLimits) reserve(st *unix.Statfs_t) int64 {
	switch {
	case l.minFree < 0:
		return 0
	case l.minFree == 0:
		return min(DefaultMinFreeSpace, int64(st.Blocks)*st.Bsize/20)
	}
	return l.minFree
}

// budgetWriter writes to f, noting what it writes against b (see wrote).
type budgetWriter struct {
	f *os.File
	b *importBudget
}

func (w budgetWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	if n > 0 {
		if berr := w.b.wrote(int(w.f.Fd()), int64(n)); berr != nil {
			return n, berr
		}
	}
	return n, err
}

// formatBytes writes n in the largest binary unit that keeps it whole, or
// to a tenth.
func formatBytes(n int64) string {
	const units = "KMGTPE"
	if n < 1<<10 {
		return strconv.FormatInt(n, 10) + " B"
	}
	i, div := 0, int64(1<<10)
	for i < len(units)-1 && n/div >= 1<<10 {
		i++
		div <<= 10
	}
	if n%div == 0 {
		return fmt.Sprintf("%d %ciB", n/div, units[i])
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), units[i])
}
