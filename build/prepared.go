package build

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/layerfs"
)

// rootfsPrefix begins the keys of the rootfses a build prepares to look
// at an image (the parent of a COPY or WORKDIR, the source of COPY
// --from). RUN steps' rootfses are their sandboxes', which berth gc
// reclaims from the sandboxes' records.
const rootfsPrefix = "build-"

// prepare makes a rootfs of img for a step to look at, and returns the
// function that releases it. While it exists, the build holds an flock
// on a file named after its key: a build killed before its release
// (kill -9, a crash) leaves the rootfs mounted, and its lock free, for
// the next Build on the store to release (reclaimRootfses).
func (b *builder) prepare(ctx context.Context, img *layerfs.Image) (*layerfs.Rootfs, func(), error) {
	key := rootfsPrefix + randomID()
	dir := rootfsLockDir(b.store)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, err
	}
	lock, err := lockFile(filepath.Join(dir, key), false)
	if err != nil {
		return nil, nil, err
	}
	release := func() {
		if err := released(b.store.Release(context.WithoutCancel(ctx), key)); err != nil {
			b.opts.Logger.Warn("build: cannot release a rootfs", "key", key, "err", err)
		} else {
			os.Remove(lock.Name())
		}
		lock.Close()
	}
	rfs, err := b.store.Prepare(ctx, key, img, nil)
	if err != nil {
		release()
		return nil, nil, fmt.Errorf("look at image %s: %w", img.Digest, err)
	}
	return rfs, release, nil
}

// released is the error of a Release, nil if there was nothing (any
// more) to release: a Prepare that failed early, or a rootfs its build
// released while another build looked at it.
func released(err error) error {
	if errors.Is(err, layerfs.ErrNotFound) {
		return nil
	}
	return err
}

func rootfsLockDir(store *layerfs.Store) string {
	return filepath.Join(store.Root(), "build-cache", "rootfs")
}

// lockFile opens (creating) and flocks name; with try, it fails at once
// if another holds the lock.
func lockFile(name string, try bool) (*os.File, error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, err
	}
	how := unix.LOCK_EX
	if try {
		how |= unix.LOCK_NB
	}
	if err := unix.Flock(int(f.Fd()), how); err != nil {
		f.Close()
		return nil, &os.PathError{Op: "flock", Path: name, Err: err}
	}
	return f, nil
}

// reclaimRootfses releases the rootfses that builds killed before their
// release left in store: those whose lock no build holds. A build that
// is running holds the lock of every rootfs it has prepared, from before
// the rootfs exists until after it is gone.
func reclaimRootfses(ctx context.Context, store *layerfs.Store, log *slog.Logger) {
	keys, err := store.Rootfses(ctx)
	if err != nil {
		return
	}
	for _, key := range keys {
		if !strings.HasPrefix(key, rootfsPrefix) {
			continue
		}
		os.MkdirAll(rootfsLockDir(store), 0o700)
		lock, err := lockFile(filepath.Join(rootfsLockDir(store), key), true)
		if errors.Is(err, unix.EWOULDBLOCK) {
			continue // its build is running
		}
		if err != nil {
			log.Warn("build: cannot look at a left-over rootfs", "key", key, "err", err)
			continue
		}
		if err := released(store.Release(ctx, key)); err != nil {
			log.Warn("build: cannot release a rootfs a killed build left", "key", key, "err", err)
		} else {
			log.Info("build: released a rootfs a killed build left", "key", key)
			os.Remove(lock.Name())
		}
		lock.Close()
	}
}
