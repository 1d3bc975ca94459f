package layerfs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/atomicfile"
)

// DefaultRoot is where a Store lives unless told otherwise: $BERTH_ROOT if
// set, else /var/lib/berth.
func DefaultRoot() string {
	if r := os.Getenv("BERTH_ROOT"); r != "" {
		return r
	}
	return "/var/lib/berth"
}

// Options configure a Store. The zero value is ready to use.
type Options struct {
	// Driver chooses how Prepare builds a rootfs: "overlay", "copy", or ""
	// to use overlay where a probe mount shows it works and copy elsewhere.
	// A probe that succeeded is remembered in the store until the next
	// boot, or until the store is on another filesystem.
	Driver string
	// Logger receives the store's diagnostics; nil discards them.
	Logger *slog.Logger

	// MaxImportSize bounds the total size of the files one import unpacks
	// (an archive's members and its layers' files, holes included), and
	// so the work and disk a small compressed layer can claim. Zero means
	// DefaultMaxImportSize, a negative value no limit. Past it, Import
	// fails with ErrImportTooLarge and leaves nothing behind.
	MaxImportSize int64
	// MaxImportEntries bounds the files, directories, links and other
	// entries one import unpacks, likewise: zero means
	// DefaultMaxImportEntries, a negative value no limit.
	MaxImportEntries int64
	// MinFreeSpace is the space that imports and commits leave free on the
	// store's filesystem, measured as they go; past it they fail with
	// ErrNoSpace and leave nothing behind. Zero means DefaultMinFreeSpace
	// or 5% of the filesystem, whichever is less (and 5% of its inodes, at
	// most 65536, where it counts inodes); a negative value checks nothing.
	MinFreeSpace int64
}

// A Store is an image store rooted at a directory. Its methods are safe for
// concurrent use, and several processes may open the same root at once.
//
// On disk:
//
//	blobs/sha256/<hex>   manifests, configs and layer blobs as imported
//	layers/<hex>/diff    a layer unpacked in overlay format (OCI .wh. files on overlayfs), by diff ID
//	images/<hex>         one record per image, by manifest digest
//	refs/<name>          a name:tag pointing at an image
//	rootfs/<key>/        a prepared rootfs and its private state
//	holds/<name>         layers a rootfs outside the store uses, kept from GC (Hold)
//	quota/               empty ext4 images that disk quotas copy, by size
//	locks/, tmp/         per-layer locks and private staging areas
type Store struct {
	root string
	log  *slog.Logger

	driverName string
	driverOnce sync.Once
	driver     driver
	driverErr  error

	// limits bound each import; see Options.MaxImportSize.
	limits importLimits

	// idmapWarned records that Prepare has warned once that it copies
	// images for user namespaces, so that it does not on every call.
	idmapWarned atomic.Bool

	// projectQuotas records whether the store's filesystem enforces
	// project quotas, for disk quotas, and anyQuotas whether it enforces
	// quotas of any type, which rootfs mounts must not bypass; asked once.
	quotaOnce                sync.Once
	projectQuotas, anyQuotas bool
}

// Open opens the store at root, creating it if it does not exist.
func Open(root string, opts *Options) (*Store, error) {
	if opts == nil {
		opts = &Options{}
	}
	if root == "" {
		return nil, errors.New("layerfs: empty store root")
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("layerfs: store root %q: %w", root, err)
	}
	switch opts.Driver {
	case "", "overlay", "copy":
	default:
		return nil, fmt.Errorf("layerfs: unknown rootfs driver %q (want overlay or copy)", opts.Driver)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{root: abs, log: log, driverName: opts.Driver, limits: newImportLimits(abs, opts)}
	for _, d := range []string{"blobs/sha256", "layers", "images", "refs", "rootfs", "locks", "tmp"} {
		if err := os.MkdirAll(filepath.Join(abs, d), 0o700); err != nil {
			return nil, fmt.Errorf("layerfs: create store: %w", err)
		}
	}
	// Root in a sandbox's user namespace is an ordinary id on the host,
	// and its init must still reach its rootfs to mount it: the path there
	// may be searched by anyone, though not listed. Everything else stays
	// closed.
	for _, d := range []string{abs, filepath.Join(abs, "rootfs")} {
		if err := os.Chmod(d, 0o711); err != nil {
			return nil, fmt.Errorf("layerfs: create store: %w", err)
		}
	}
	return s, nil
}

// Root returns the directory the store lives in.
func (s *Store) Root() string { return s.root }

// Driver returns the name of the rootfs driver Prepare uses, "overlay" or
// "copy", probing the filesystem on first use.
func (s *Store) Driver() (string, error) {
	d, err := s.rootfsDriver()
	if err != nil {
		return "", err
	}
	return d.Name(), nil
}

func (s *Store) rootfsDriver() (driver, error) {
	s.driverOnce.Do(func() {
		s.driver, s.driverErr = newDriver(s.driverName, s.path("tmp"), s.path(probeCacheFile), s.log)
		if s.driverErr == nil {
			s.log.Debug("rootfs driver", "driver", s.driver.Name(), "root", s.root)
		}
	})
	return s.driver, s.driverErr
}

// probeCacheFile, in the store, remembers that overlayfs passed the probe.
const probeCacheFile = "overlay-probe"

func (s *Store) path(elem ...string) string {
	return filepath.Join(append([]string{s.root}, elem...)...)
}

// A fileLock is an flock(2) lock. flock locks belong to an open file
// description, so they exclude other goroutines of this process as well as
// other processes, and the kernel drops them when a holder dies.
type fileLock struct{ f *os.File }

// lockFile takes an flock on path (creating it), shared or exclusive,
// waiting until ctx is done.
func lockFile(ctx context.Context, path string, how int) (*fileLock, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	l := &fileLock{f}
	if err := l.wait(ctx, how); err != nil {
		f.Close()
		return nil, err
	}
	return l, nil
}

// wait polls rather than blocking in flock(2) so that ctx can interrupt it.
func (l *fileLock) wait(ctx context.Context, how int) error {
	delay := 200 * time.Microsecond
	for {
		err := unix.Flock(int(l.f.Fd()), how|unix.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("lock %s: %w", l.f.Name(), err)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("lock %s: %w", l.f.Name(), ctx.Err())
		case <-t.C:
		}
		if delay < 20*time.Millisecond {
			delay *= 2
		}
	}
}

func (l *fileLock) unlock() { l.f.Close() }

// use takes the store's lock shared, as every operation does; GC takes it
// exclusively so that nothing it might delete is being created or read.
func (s *Store) use(ctx context.Context) (*fileLock, error) {
	return lockFile(ctx, s.path("store.lock"), unix.LOCK_SH)
}

// A staging directory is private to one operation until its contents are
// renamed into place. Its owner holds an flock on it, so a directory that
// can be locked was left by a process that died.
type staging struct {
	dir  string
	lock *fileLock
}

func (s *Store) newStaging() (*staging, error) {
	dir, err := os.MkdirTemp(s.path("tmp"), "stage-")
	if err != nil {
		return nil, fmt.Errorf("layerfs: staging area: %w", err)
	}
	f, err := os.Open(dir)
	if err == nil {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err != nil {
			f.Close()
		}
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("layerfs: staging area: %w", err)
	}
	return &staging{dir: dir, lock: &fileLock{f}}, nil
}

func (st *staging) path(name string) string { return filepath.Join(st.dir, name) }

func (st *staging) remove() {
	os.RemoveAll(st.dir)
	st.lock.unlock()
}

// staleAge keeps a cleaner from racing a staging directory that was just
// made and is not locked yet.
const staleAge = time.Minute

// cleanStaging removes staging directories whose owners died. With all set
// (under the exclusive store lock) it removes every one.
func (s *Store) cleanStaging(all bool) (removed int) {
	entries, err := os.ReadDir(s.path("tmp"))
	if err != nil {
		return 0
	}
	for _, e := range entries {
		p := s.path("tmp", e.Name())
		if !strings.HasPrefix(e.Name(), "stage-") {
			// Only an overlay probe that was killed mid-way leaves anything
			// else here, possibly still mounted.
			if all {
				if err := unmountUnder(p); err != nil {
					s.log.Warn("unmount stale probe", "path", p, "err", err)
					continue
				}
				if os.RemoveAll(p) == nil {
					removed++
				}
			}
			continue
		}
		if !all {
			info, err := e.Info()
			if err != nil || time.Since(info.ModTime()) < staleAge {
				continue
			}
			f, err := os.Open(p)
			if err != nil {
				continue
			}
			err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
			f.Close()
			if err != nil {
				continue
			}
		}
		if err := os.RemoveAll(p); err == nil {
			removed++
		} else {
			s.log.Warn("remove stale staging directory", "path", p, "err", err)
		}
	}
	return removed
}

// writeFileAtomic writes data to path through a temporary file and a
// rename, so readers see the old content or the new, never a mix. Durable
// files are synced, file and directory, so that a power cut cannot leave
// the new name with no data behind it. Two kinds of file skip the cost
// (some 0.4 ms a sync on the development machine's disk, twice on every
// sandbox's start): caches, remade when unreadable, and rootfs records,
// which describe mounts that a power cut undoes anyway, and which Release
// does without when they are damaged (sweepRootfs).
func writeFileAtomic(path string, data []byte, durable bool) error {
	if durable {
		return atomicfile.WriteFile(path, data, 0o600)
	}
	return atomicfile.Replace(path, data, 0o600)
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }

// unmountUnder unmounts every mount at or below dir, deepest first.
func unmountUnder(dir string) error {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		// Mount points escape blanks as octal; berth's own paths have none.
		if p := f[4]; p == dir || strings.HasPrefix(p, dir+"/") {
			points = append(points, p)
		}
	}
	for i := len(points) - 1; i >= 0; i-- {
		if err := unix.Unmount(points[i], 0); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			if err := unix.Unmount(points[i], unix.MNT_DETACH); err != nil {
				return fmt.Errorf("unmount %s: %w", points[i], err)
			}
		}
	}
	return nil
}
