package sandbox

import (
	"errors"
	"slices"
	"testing"
	"time"
)

// A release waits for the reads in progress; reads after it fail; a
// failed swap counts as a release; kept steps run at Close, in order.
func TestRootfsHold(t *testing.T) {
	h := &rootfsHold{}
	var order []string
	release := h.releasing(func() error { order = append(order, "release"); return nil })
	released := make(chan struct{})
	err := h.read(func() error {
		started := make(chan struct{})
		go func() { close(started); release(); close(released) }()
		<-started
		// Give a release that does not wait every chance to run.
		time.Sleep(50 * time.Millisecond)
		select {
		case <-released:
			t.Error("the rootfs was released during a read")
		default:
		}
		order = append(order, "read")
		return nil
	})
	<-released
	if err != nil || !slices.Equal(order, []string{"read", "release"}) {
		t.Errorf("read then release: %v, order %v", err, order)
	}
	if err := h.read(func() error { return nil }); !errors.Is(err, errRootfsReleased) {
		t.Errorf("read after the release: %v, want %v", err, errRootfsReleased)
	}

	h = &rootfsHold{}
	if err := h.replacing(func() error { return nil }); err != nil || h.read(func() error { return nil }) != nil {
		t.Errorf("after a swap: %v, the rootfs should be readable", err)
	}
	errSwap := errors.New("swap")
	if err := h.replacing(func() error { return errSwap }); !errors.Is(err, errSwap) || !errors.Is(h.read(func() error { return nil }), errRootfsReleased) {
		t.Errorf("after a failed swap: %v, the rootfs should count as released", err)
	}

	h, order = &rootfsHold{}, nil
	step := func(name string) func() error {
		return h.untilClose(func() error { order = append(order, name); return nil })
	}
	undo := []func() error{step("owner"), step("state"), step("rootfs")}
	h.keep()
	for i := len(undo) - 1; i >= 0; i-- {
		undo[i]()
	}
	if len(order) != 0 {
		t.Fatalf("kept steps ran before Close: %v", order)
	}
	h.releaseKept()
	if want := []string{"rootfs", "state", "owner"}; !slices.Equal(order, want) {
		t.Errorf("kept steps ran as %v, want %v", order, want)
	}
}
