package netplug

import (
	"context"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// A fileLock is a flock(2) lock. Locks are on open files, not processes,
// so they exclude goroutines of one process from each other as well as
// other processes, and the kernel drops them when a process dies: a crash
// never leaves a network locked.
type fileLock struct{ f *os.File }

// lockShared and lockExclusive take the lock at path, creating the file.
// Many holders may share a lock; an exclusive one has it alone.
func lockShared(ctx context.Context, path string) (*fileLock, error) {
	return lockFile(ctx, path, unix.LOCK_SH)
}

func lockExclusive(ctx context.Context, path string) (*fileLock, error) {
	return lockFile(ctx, path, unix.LOCK_EX)
}

func lockFile(ctx context.Context, path string, how int) (*fileLock, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	fd := int(f.Fd())
	err = unix.Flock(fd, how|unix.LOCK_NB)
	if err == nil {
		return &fileLock{f}, nil
	}
	if !errors.Is(err, unix.EWOULDBLOCK) {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	// Contended: wait in a blocking flock on a goroutine of its own, so
	// that the wait can be abandoned when ctx ends. An abandoned lock is
	// released as soon as it is granted.
	done := make(chan error, 1)
	go func() {
		for {
			err := unix.Flock(fd, how)
			if err != unix.EINTR {
				done <- err
				return
			}
		}
	}()
	select {
	case err := <-done:
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		return &fileLock{f}, nil
	case <-ctx.Done():
		go func() {
			<-done
			f.Close()
		}()
		return nil, ctx.Err()
	}
}

// Unlock releases the lock. Closing the file is what releases it.
func (l *fileLock) Unlock() {
	if l != nil && l.f != nil {
		l.f.Close()
		l.f = nil
	}
}
