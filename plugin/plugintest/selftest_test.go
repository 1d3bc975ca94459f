package plugintest_test

import (
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/berth-dev/berth/plugin/plugintest"
)

// The kit fails a plugin with any of the bugs it is there to find, and
// its message names the bug. Each case runs one check of the kit against
// a broken plugin in a test process of its own (TestBrokenTarget), whose
// failure is the expected outcome.
func TestKitFailsBrokenPlugins(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	// What the host-leak and host-route plugins leave, which the kit must
	// report and this test then removes.
	t.Cleanup(func() {
		if l, err := netlink.LinkByName("kitbroken0"); err == nil {
			netlink.LinkDel(l)
		}
		if lo, err := netlink.LinkByName("lo"); err == nil {
			netlink.RouteDel(&netlink.Route{LinkIndex: lo.Attrs().Index, Dst: &net.IPNet{IP: net.IPv4(192, 0, 2, 77), Mask: net.CIDRMask(32, 32)}})
		}
	})
	for _, c := range []struct {
		kind, fault, check, want string
	}{
		{"storage", "upside-down", "RoundTrip", "the layers are stacked upside down"},
		{"storage", "release-leaves", "RoundTrip", "left behind under the plugin's roots"},
		{"storage", "unknown-ok", "UnknownKey", "of a key never prepared succeeded; want an error that wraps plugin.ErrNotFound"},
		{"storage", "stray", "Close", "stray-kit-"},
		{"network", "keep-veth", "RoundTrip", `its namespace still has ["eth0"]`},
		{"network", "unknown-ok", "UnknownID", "of an id never attached succeeded; want an error that wraps plugin.ErrNotFound"},
		{"network", "host-leak", "Close", "interface kitbroken0 (bridge)"},
		{"network", "host-route", "Close", "Dst: 192.0.2.77/32"},
	} {
		t.Run(c.kind+"-"+c.fault, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run", "^TestBrokenTarget$/^"+c.check+"$", "-test.count=1", "-test.timeout=5m")
			cmd.Env = append(os.Environ(), "KIT_BIN_DIR="+binDir, "KIT_BROKEN_KIND="+c.kind, "KIT_BROKEN_FAULT="+c.fault)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Errorf("the kit's %s check passed a %s plugin with bug %q:\n%s", c.check, c.kind, c.fault, out)
			}
			if !strings.Contains(string(out), c.want) {
				t.Errorf("the kit's %s check of a %s plugin with bug %q does not say %q:\n%s", c.check, c.kind, c.fault, c.want, out)
			}
		})
	}
}

// TestBrokenTarget is TestKitFailsBrokenPlugins's test process: it runs
// the kit against the broken plugin $KIT_BROKEN_KIND with bug
// $KIT_BROKEN_FAULT, and is meant to fail.
func TestBrokenTarget(t *testing.T) {
	kind, fault := os.Getenv("KIT_BROKEN_KIND"), os.Getenv("KIT_BROKEN_FAULT")
	if kind == "" {
		t.Skip("run by TestKitFailsBrokenPlugins")
	}
	env := []string{"BROKEN_FAULT=" + fault, "BROKEN_ROOT=" + t.TempDir()}
	switch kind {
	case "storage":
		plugintest.Storage(t, bins["brokenstorage"], &plugintest.StorageOptions{Env: env})
	case "network":
		plugintest.Network(t, bins["brokennetwork"], &plugintest.NetworkOptions{Env: env})
	}
}
