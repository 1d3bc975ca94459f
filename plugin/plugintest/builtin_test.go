package plugintest_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/berth-dev/berth/netplug"
	"github.com/berth-dev/berth/plugin/plugintest"
)

// bins holds the example plugins TestMain builds, by directory name.
var bins = map[string]string{}

// TestMain builds the built-ins wrapped as plugins, which the tests then
// run the kit against, as a plugin's author would.
func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		// The kit skips every test without root: build nothing.
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "plugintest-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	for _, name := range []string{"overlay-storage", "cni-network"} {
		bin := filepath.Join(dir, name)
		cmd := exec.Command(goTool, "build", "-o", bin, "../../examples/plugins/"+name)
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", name, err, out)
			return 1
		}
		bins[name] = bin
	}
	return m.Run()
}

func TestOverlayStorage(t *testing.T) {
	// The plugin takes its root from the environment it is started in.
	plugintest.Storage(t, bins["overlay-storage"], &plugintest.StorageOptions{
		Env: []string{"BERTH_OVERLAY_STORAGE_ROOT=" + filepath.Join(t.TempDir(), "overlay-storage")},
	})
}

// The kit's network for the cni-network plugin: a named netplug network
// of the test's own, on a subnet no other package's tests use.
const (
	kitNetwork = "kit"
	kitBridge  = "berth-kit"
	kitSubnet  = "10.217.12.0/24"
)

func TestCNINetwork(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	// The bridge plugin turns the host's IPv4 forwarding on; the test
	// leaves it as it found it.
	const forward = "/proc/sys/net/ipv4/ip_forward"
	if was, err := os.ReadFile(forward); err == nil {
		t.Cleanup(func() { os.WriteFile(forward, was, 0o644) })
	}
	tmp := t.TempDir()
	opts := &netplug.Options{ConfigDir: filepath.Join(tmp, "config"), RunDir: filepath.Join(tmp, "run")}
	nets, err := netplug.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := nets.Create(ctx, kitNetwork, &netplug.NetworkOptions{Bridge: kitBridge, Subnet: netip.MustParsePrefix(kitSubnet)}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := nets.Remove(ctx, kitNetwork); err != nil {
			t.Errorf("remove the kit's network: %v", err)
		}
	})
	plugintest.Network(t, bins["cni-network"], &plugintest.NetworkOptions{
		Env: []string{
			"BERTH_CNI_NETWORK_CONFIG_DIR=" + opts.ConfigDir,
			"BERTH_CNI_NETWORK_RUN_DIR=" + opts.RunDir,
			"BERTH_CNI_NETWORK_ROOT=" + filepath.Join(tmp, "plugin"),
		},
		Settings:  map[string]string{"network": kitNetwork},
		KeepLinks: []string{kitBridge}, // the network's bridge stays until the network is removed
	})
}
