package sandbox

import (
	"errors"
	"sync"
)

// errRootfsReleased means the sandbox's rootfs is gone: its workload ended
// without Options.KeepRootfs, or Close released it.
var errRootfsReleased = errors.New("its rootfs has been released")

// A rootfsHold guards a sandbox's rootfs while the host reads it (Commit,
// CopyFrom), and keeps it past the workload's end under
// Options.KeepRootfs.
//
// Readers hold it shared; the teardown step that releases the rootfs holds
// it exclusively, so a commit in progress finishes before its rootfs goes,
// and a commit that comes after learns that it has gone instead of reading
// a directory half removed.
//
// With KeepRootfs, the steps that release the rootfs, and with it the
// sandbox's state directory and owner lock, are put off until Close. The
// state directory and lock stay so that Recover and `berth gc` treat the
// kept rootfs as they treat a running sandbox's: a live owner's is left
// alone, a dead owner's reclaimed.
type rootfsHold struct {
	mu       sync.RWMutex
	released bool

	keepMu  sync.Mutex
	keeping bool           // the workload has ended under KeepRootfs
	kept    []func() error // undo steps put off until Close, in the order to run them
}

// read calls fn while the rootfs is held: it is not released before fn
// returns. It fails with errRootfsReleased if it has been already.
func (h *rootfsHold) read(fn func() error) error {
	if h == nil {
		return errRootfsReleased
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.released {
		return errRootfsReleased
	}
	return fn()
}

// releasing wraps the undo step that releases the rootfs: it waits for
// readers, and marks the rootfs gone whether or not the release succeeds,
// since a failed release may have undone part of it.
func (h *rootfsHold) releasing(release func() error) func() error {
	return func() error {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.released = true
		return release()
	}
}

// untilClose wraps an undo step that KeepRootfs puts off until Close:
// once keep has been called, running the step only records it.
func (h *rootfsHold) untilClose(step func() error) func() error {
	return func() error {
		h.keepMu.Lock()
		defer h.keepMu.Unlock()
		if h.keeping {
			// The undo list runs newest first, which is the order
			// the steps must run in later too.
			h.kept = append(h.kept, step)
			return nil
		}
		return step()
	}
}

// keep makes the teardown that follows put off the steps untilClose wraps.
func (h *rootfsHold) keep() {
	if h == nil {
		return
	}
	h.keepMu.Lock()
	h.keeping = true
	h.keepMu.Unlock()
}

// releaseKept runs the steps put off until Close, each even if one before
// it failed (as the teardown does), and returns the first error.
func (h *rootfsHold) releaseKept() error {
	if h == nil {
		return nil
	}
	h.keepMu.Lock()
	steps := h.kept
	h.kept, h.keeping = nil, false
	h.keepMu.Unlock()
	var first error
	for _, step := range steps {
		if err := step(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// replacing runs swap, which releases the rootfs and prepares another in
// its place under the same key (as Reset does), with the hold taken
// exclusively, so that no read spans the swap: a commit or copy in
// progress finishes on the old rootfs first, and one that starts later
// reads the new one. If swap fails, the rootfs counts as released.
func (h *rootfsHold) replacing(swap func() error) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.released {
		return errRootfsReleased
	}
	if err := swap(); err != nil {
		h.released = true
		return err
	}
	return nil
}
