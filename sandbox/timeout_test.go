package sandbox

import (
	"context"
	"testing"
	"time"

	"github.com/berth-dev/berth/netplug"
)

// slowNetwork is a Network whose Attach takes delay (or until its context
// ends), as a slow step of a start would.
type slowNetwork struct{ delay time.Duration }

func (n slowNetwork) Attach(ctx context.Context, _, _ string, _ *netplug.AttachOptions) (*netplug.Attachment, error) {
	select {
	case <-time.After(n.delay):
		return &netplug.Attachment{}, nil
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

func (slowNetwork) Detach(context.Context, string, string) error { return nil }

// TestTimeoutCountsFromStart checks that Options.Timeout is one deadline
// for the start and the workload: a workload whose start took half of it
// is killed when the rest has run out, not a whole Timeout after it began.
func TestTimeoutCountsFromStart(t *testing.T) {
	const timeout, startDelay = 6 * time.Second, 4 * time.Second
	called := time.Now()
	res, err := New("alpine:test", opts(func(o *Options) {
		o.Args, o.Network, o.Timeout = []string{"sleep", "100"}, slowNetwork{delay: startDelay}, timeout
	})).Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !res.TimedOut {
		t.Fatalf("result %+v, want timed out", res)
	}
	// Given a whole Timeout once started, it would have lived for
	// startDelay+timeout at least; killed at the deadline, it ends a kill's
	// latency after it (three quarters of startDelay allowed, for a
	// loaded machine).
	if late := res.Exited.Sub(called.Add(timeout)); late > startDelay*3/4 {
		t.Errorf("the workload ended %v after the deadline: its Timeout counted from its start", late)
	}
	if left := leftBehind(t); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}
