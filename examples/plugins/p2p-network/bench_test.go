package main

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/netplug"
	"github.com/berth-dev/berth/plugin"
	"github.com/berth-dev/berth/sandbox"
)

// BenchmarkAttachDetach measures one Attach and its Detach of a fresh
// network namespace: this plugin in process (what the link costs), the
// same behind the plugin protocol (what berth sees), and berth's
// built-in CNI bridge network, for comparison. Making the namespaces is
// not counted.
//
//	go test -run XXX -bench AttachDetach -benchtime 200x ./examples/plugins/p2p-network
func BenchmarkAttachDetach(b *testing.B) {
	needRoot(b)
	b.Run("in-process", func(b *testing.B) {
		n := newTestNetwork(b, "10.218.32.0/20")
		benchNetwork(b, func(ctx context.Context, id, path string) error {
			_, err := n.Attach(ctx, &plugin.AttachRequest{ID: id, NetnsPath: path})
			return err
		}, func(ctx context.Context, id, path string) error { return n.Detach(ctx, id, path) })
	})
	b.Run("plugin", func(b *testing.B) {
		n, err := plugin.OpenNetwork(b.Context(), pluginBinary(b), hostOptions(b, b.TempDir(), "10.218.48.0/20"))
		if err != nil {
			b.Fatal(err)
		}
		defer n.Close()
		benchSandboxNetwork(b, n)
	})
	b.Run("cni-bridge", func(b *testing.B) {
		e, err := testenv.Setup(testenv.Options{
			Name:   "berth-p2pbench",
			Bridge: "berth-p2pb", Subnet: netip.MustParsePrefix("10.218.64.0/20"),
		})
		b.Cleanup(e.Close)
		if err != nil {
			b.Fatal(err)
		}
		n, err := e.Nets.Get(b.Context(), netplug.DefaultNetwork)
		if err != nil {
			b.Fatal(err)
		}
		benchSandboxNetwork(b, n)
	})
}

func benchSandboxNetwork(b *testing.B, n sandbox.Network) {
	benchNetwork(b, func(ctx context.Context, id, path string) error {
		_, err := n.Attach(ctx, id, path, &netplug.AttachOptions{})
		return err
	}, n.Detach)
}

func benchNetwork(b *testing.B, attach, detach func(ctx context.Context, id, path string) error) {
	ctx := context.Background()
	var attaching, detaching time.Duration
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		ns := newNS(b)
		id := testID(b, fmt.Sprint(i))
		b.StartTimer()
		t0 := time.Now()
		if err := attach(ctx, id, ns.path); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := detach(ctx, id, ns.path); err != nil {
			b.Fatal(err)
		}
		detaching += time.Since(t1)
		attaching += t1.Sub(t0)
		b.StopTimer()
		ns.kill()
		b.StartTimer()
	}
	b.ReportMetric(float64(attaching.Microseconds())/float64(b.N)/1000, "ms/attach")
	b.ReportMetric(float64(detaching.Microseconds())/float64(b.N)/1000, "ms/detach")
}
