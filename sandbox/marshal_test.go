package sandbox

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/berth-dev/berth/sandbox/internal/nsinit"
)

// TestOversizedSpecIsSetupError gives a sandbox more mounts than its
// init's spec can carry: that is a sandbox that cannot be made (ErrSetup,
// berth's 125), not a program that cannot run (ErrExec, 126), which only
// arguments and environment make.
func TestOversizedSpecIsSetupError(t *testing.T) {
	data := strings.Repeat("size=1m,", 500) // 4000 bytes, as a page of mount data allows
	n := nsinit.MaxSpecBytes/len(data) + 10
	mounts := make([]Mount, n)
	for i := range mounts {
		mounts[i] = Mount{Type: "tmpfs", Destination: fmt.Sprintf("/mnt/%d", i), Options: data}
	}
	_, err := New("alpine:test", opts(func(o *Options) {
		o.Args, o.Mounts = []string{"true"}, mounts
	})).Run(context.Background())
	if !errors.Is(err, ErrSetup) || errors.Is(err, ErrExec) {
		t.Errorf("error %.300v: want ErrSetup and not ErrExec", err)
	}
	if err == nil || !strings.Contains(err.Error(), strconv.Itoa(nsinit.MaxSpecBytes)) {
		t.Errorf("error %.300v does not name the limit of %d bytes", err, nsinit.MaxSpecBytes)
	}
	if left := leftBehind(t); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}
