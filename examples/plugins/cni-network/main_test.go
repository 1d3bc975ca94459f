package main

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/netplug"
	"github.com/berth-dev/berth/plugin"
)

// TestAttachOfAnotherProgramsID: netplug's directories may be shared with
// another program (berth's built-in network is the default's other user).
// An Attach of an id that program attached fails with ErrExists, and must
// leave that program's attachment alone: undoing "its own" failed Attach
// by id must not detach the other's.
func TestAttachOfAnotherProgramsID(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	const forward = "/proc/sys/net/ipv4/ip_forward"
	if was, err := os.ReadFile(forward); err == nil {
		t.Cleanup(func() { os.WriteFile(forward, was, 0o644) })
	}
	tmp := t.TempDir()
	opts := &netplug.Options{ConfigDir: filepath.Join(tmp, "config"), RunDir: filepath.Join(tmp, "run")}
	other, err := netplug.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const name = "cnitest"
	bridged, err := other.Create(ctx, name, &netplug.NetworkOptions{Bridge: "berth-cnitest", Subnet: netip.MustParsePrefix("10.217.13.0/24")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := other.Remove(ctx, name); err != nil {
			t.Errorf("remove the network: %v", err)
		}
	})
	ns1, ns2 := testenv.Netns(t), testenv.Netns(t)
	const id = "shared-id"
	if _, err := bridged.Attach(ctx, id, ns1, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := other.DetachAll(ctx, id); err != nil {
			t.Errorf("detach: %v", err)
		}
	})

	n, err := newNetwork(filepath.Join(tmp, "plugin"), opts)
	if err != nil {
		t.Fatal(err)
	}
	_, err = n.Attach(ctx, &plugin.AttachRequest{ID: id, NetnsPath: ns2, Options: map[string]string{"network": name}})
	if !errors.Is(err, plugin.ErrExists) {
		t.Fatalf("Attach of an id another program attached: %v, want ErrExists", err)
	}
	if ids, err := n.List(ctx); err != nil || len(ids) != 0 {
		t.Errorf("the plugin lists %q (%v) after its failed Attach", ids, err)
	}
	if links := linksIn(t, ns1); len(links) < 2 {
		t.Errorf("the other program's sandbox lost its interface: links %q", links)
	}
}

func linksIn(t *testing.T, path string) []string {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	return names
}
