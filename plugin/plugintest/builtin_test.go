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

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/layerfs"
	"github.com/berth-dev/berth/netplug"
	"github.com/berth-dev/berth/plugin/plugintest"
)

// bins holds the plugins TestMain builds, by directory name, in binDir.
var (
	bins   = map[string]string{}
	binDir string
)

// The plugins the tests run the kit against: the built-ins wrapped as
// plugins, as a plugin's author would, and the kit's own broken ones.
var plugins = map[string]string{
	"overlay-storage": "../../examples/plugins/overlay-storage",
	"cni-network":     "../../examples/plugins/cni-network",
	"brokenstorage":   "./internal/brokenstorage",
	"brokennetwork":   "./internal/brokennetwork",
}

// TestMain builds the plugins, unless $KIT_BIN_DIR names where a parent
// test process (TestKitFailsBrokenPlugins) built them already.
func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		// The kit skips every test without root: build nothing.
		return m.Run()
	}
	binDir = os.Getenv("KIT_BIN_DIR")
	build := binDir == ""
	if build {
		dir, err := os.MkdirTemp("", "plugintest-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		binDir = dir
	}
	args := []string{"build", "-o", binDir + "/"}
	for name, src := range plugins {
		bins[name] = filepath.Join(binDir, name) // go build names a binary after its directory
		args = append(args, src)
	}
	if build {
		if out, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), args...).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build the plugins: %v\n%s", err, out)
			return 1
		}
	}
	return m.Run()
}

func TestOverlayStorage(t *testing.T) {
	// The plugin takes its root from the environment it is started in.
	plugintest.Storage(t, bins["overlay-storage"], &plugintest.StorageOptions{
		Env: []string{"BERTH_OVERLAY_STORAGE_ROOT=" + filepath.Join(t.TempDir(), "overlay-storage")},
	})
}

// The kit takes a store and an image of the caller's: here the shared
// Alpine image, a real distribution's rootfs.
func TestOverlayStorageAlpine(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	store, err := layerfs.Open(filepath.Join(t.TempDir(), "store"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := testenv.ImportAlpineWith(t.Context(), store, "alpine:kit"); err != nil {
		t.Fatal(err)
	}
	plugintest.Storage(t, bins["overlay-storage"], &plugintest.StorageOptions{
		Env:   []string{"BERTH_OVERLAY_STORAGE_ROOT=" + filepath.Join(t.TempDir(), "overlay-storage")},
		Store: store,
		Image: "alpine:kit",
		Skip:  map[string]string{"KillMidPrepare": "TestOverlayStorage kills it mid-prepare already"},
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
		Settings: map[string]string{"network": kitNetwork},
		// The network's bridge (kitBridge) stays until the network is
		// removed, and is the only one the plugin makes. `go test ./...`
		// runs other packages' tests meanwhile, whose networks add
		// bridges named berth* too: they are not this plugin's.
		KeepLinks: []string{"berth*"},
	})
}
