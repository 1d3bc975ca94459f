package main

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/netplug"
	"github.com/berth-dev/berth/plugin"
)

// The main goroutine keeps the main thread, so that no namespace
// testNetns enters is ever the main thread's, which is what netplug takes
// /proc/self/ns/net, the host's, to be.
func init() { runtime.LockOSThread() }

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
	ns1, ns2 := testNetns(t), testNetns(t)
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

// testNetns makes a network namespace, kept by a bind mount, for the test.
func testNetns(t *testing.T) string {
	path := filepath.Join(t.TempDir(), "netns")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- unix.Mount("/proc/thread-self/ns/net", path, "", unix.MS_BIND, "")
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(path, unix.MNT_DETACH) })
	return path
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
