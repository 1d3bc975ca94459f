package plugintest_test

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/netplug"
	"github.com/berth-dev/berth/plugin"
	"github.com/berth-dev/berth/sandbox"
	"github.com/berth-dev/berth/security"
)

// The built-ins wrapped as plugins are interchangeable with the built-ins
// behind a real sandbox: it runs on overlay-storage's rootfs (with the
// Default preset, and with a user namespace added, so through the
// plugin's idmapped layers) and on cni-network's attachment, sees the
// image's files, its own writes and its address, and leaves the plugins
// nothing to hold once it is gone.
func TestBuiltinsInSandbox(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	e, err := testenv.Setup(testenv.Options{
		Name:   "berth-kitsb",
		Images: map[string]string{"alpine:kit": testenv.Alpine},
		// The set-up's own default network, never attached to here.
		Bridge: "berth-kitsb0", Subnet: netip.MustParsePrefix("10.217.14.0/24"),
	})
	t.Cleanup(e.Close)
	if err != nil {
		t.Fatal(err)
	}
	// The user namespace's root, an ordinary id on the host, must reach
	// the rootfs under here: t.TempDir's parent would keep it out.
	tmp, err := os.MkdirTemp("", "berth-kitsb-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })
	if err := os.Chmod(tmp, 0o711); err != nil {
		t.Fatal(err)
	}
	netOpts := &netplug.Options{ConfigDir: filepath.Join(tmp, "config"), RunDir: filepath.Join(tmp, "run")}
	nets, err := netplug.Open(netOpts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nets.Create(t.Context(), "kitsb", &netplug.NetworkOptions{Bridge: "berth-kitsb1", Subnet: netip.MustParsePrefix("10.217.13.0/24")}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := nets.Remove(context.Background(), "kitsb"); err != nil {
			t.Errorf("remove the test's network: %v", err)
		}
	})
	storage, err := plugin.OpenStorage(t.Context(), bins["overlay-storage"], &plugin.Options{
		Store:    e.Store,
		MountDir: filepath.Join(tmp, "mnt"),
		RunDir:   filepath.Join(tmp, "plugins"),
		Env:      []string{"BERTH_OVERLAY_STORAGE_ROOT=" + filepath.Join(tmp, "overlay-storage")},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { storage.Close() })
	network, err := plugin.OpenNetwork(t.Context(), bins["cni-network"], &plugin.Options{
		RunDir:   filepath.Join(tmp, "plugins"),
		Settings: map[string]string{"network": "kitsb"},
		Env: []string{
			"BERTH_CNI_NETWORK_CONFIG_DIR=" + netOpts.ConfigDir,
			"BERTH_CNI_NETWORK_RUN_DIR=" + netOpts.RunDir,
			"BERTH_CNI_NETWORK_ROOT=" + filepath.Join(tmp, "cni-network"),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { network.Close() })

	userns := security.Default()
	userns.UserNamespace = security.DefaultUserNamespace()
	for name, sec := range map[string]*security.Config{"Default": nil, "UserNS": userns} {
		t.Run(name, func(t *testing.T) {
			var out, errOut strings.Builder
			sb := sandbox.New("alpine:kit", &sandbox.Options{
				Args:    []string{"sh", "-c", "cat /etc/alpine-release && echo written >/root/kit && cat /root/kit && ip -4 addr show eth0"},
				Storage: storage, Network: network, Security: sec,
				Cgroups: e.Cgroups, StateDir: e.StateDir,
				Stdout: &out, Stderr: &errOut,
			})
			res, err := sb.Run(t.Context())
			if err != nil {
				t.Fatalf("run: %v", err)
			}
			if !res.Success() {
				t.Fatalf("exit %d: %s", res.ExitCode, errOut.String())
			}
			a := sb.Attachment()
			if a == nil || len(a.IPs) != 1 {
				t.Fatalf("attachment %+v", a)
			}
			got := out.String()
			for _, want := range []string{"3.20", "written\n", "inet " + a.IPs[0].String()} {
				if !strings.Contains(got, want) {
					t.Errorf("the sandbox printed no %q:\n%s", want, got)
				}
			}
			if keys, err := storage.Rootfses(t.Context()); err != nil || len(keys) != 0 {
				t.Errorf("rootfses after the sandbox: %q, %v", keys, err)
			}
			if ids, err := network.Attached(t.Context()); err != nil || len(ids) != 0 {
				t.Errorf("attachments after the sandbox: %q, %v", ids, err)
			}
		})
	}
}
