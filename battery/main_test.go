package battery

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"

	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/layerfs"
	"github.com/berth-dev/berth/netplug"
	"github.com/berth-dev/berth/sandbox"

	"testing"
)

// image is the shared Alpine image, imported into the battery's own store.
const image = "alpine:test"

// env is what every case shares: a private store, cgroup parent and
// networks, and the attacker built for this run.
var env struct {
	dir      string // removed at the end
	store    *layerfs.Store
	cgroups  *cgroup.Manager
	nets     *netplug.Networks
	stateDir string
	attacker string // the directory holding the attacker binary
}

// attackerPath is where sandboxes find the attacker: env.attacker, bound
// read-only.
const attackerDir = "/battery"

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "the hostile battery must run as root: it makes sandboxes, devices and networks")
		os.Exit(1)
	}
	os.Exit(runBattery(m))
}

func runBattery(m *testing.M) int {
	// The bridge plugin turns on the host's IPv4 forwarding; the battery
	// leaves it as it found it.
	const forward = "/proc/sys/net/ipv4/ip_forward"
	if was, err := os.ReadFile(forward); err == nil {
		defer os.WriteFile(forward, was, 0o644)
	}
	dir, err := os.MkdirTemp("", "berth-battery-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	// Root of a Strict sandbox's user namespace is an ordinary id on the
	// host and must reach the store, the state and the attacker.
	if err := os.Chmod(dir, 0o711); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	env.dir = dir
	env.stateDir = filepath.Join(dir, "state")
	if err := setUp(dir); err != nil {
		fmt.Fprintln(os.Stderr, "set up the battery:", err)
		return 1
	}
	defer env.cgroups.RemoveParent()
	defer env.nets.Prune(context.Background())
	// The fixtures (loop device, network, its long-lived sandbox) go
	// first, before what they were made in.
	defer fixtures.release()
	return m.Run()
}

func setUp(dir string) error {
	var err error
	env.store, err = layerfs.Open(filepath.Join(dir, "store"), nil)
	if err != nil {
		return err
	}
	env.cgroups, err = cgroup.NewManager(cgroup.Options{Parent: fmt.Sprintf("berth-battery-%d", os.Getpid())})
	if err != nil {
		return err
	}
	src := filepath.Join("..", "..", "shared", "images", "alpine-minirootfs-3.20.3-x86_64.tar.gz")
	if _, err := env.store.Import(context.Background(), src, &layerfs.ImportOptions{Name: image}); err != nil {
		return err
	}
	if out, err := exec.Command("../hack/build-cni.sh").CombinedOutput(); err != nil {
		return fmt.Errorf("build CNI plugins: %v: %s", err, out)
	}
	env.nets, err = netplug.Open(&netplug.Options{
		ConfigDir: filepath.Join(dir, "networks"),
		RunDir:    filepath.Join(dir, "run-networks"),
		Default:   netplug.NetworkOptions{Bridge: "berthbat0", Subnet: netip.MustParsePrefix("10.216.76.0/24")},
	})
	if err != nil {
		return err
	}
	env.attacker, err = buildAttacker(dir)
	return err
}

// buildAttacker builds internal/attacker statically into a directory of
// its own that sandboxes bind.
func buildAttacker(dir string) (string, error) {
	out := filepath.Join(dir, "attacker")
	if err := os.Mkdir(out, 0o755); err != nil {
		return "", err
	}
	cmd := exec.Command(goTool(), "build", "-trimpath", "-o", filepath.Join(out, "attacker"), "./internal/attacker")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build the attacker: %v: %s", err, b)
	}
	return out, nil
}

// goTool is the go command that built this test, or the first on $PATH.
func goTool() string {
	for _, root := range []string{os.Getenv("GOROOT"), runtime.GOROOT()} {
		if root == "" {
			continue
		}
		if p := filepath.Join(root, "bin", "go"); fileExists(p) {
			return p
		}
	}
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// options are a sandbox's options wired to the battery's store, with the
// attacker bound read-only.
func options() *sandbox.Options {
	return &sandbox.Options{
		Storage: env.store, Cgroups: env.cgroups, StateDir: env.stateDir,
		Mounts: []sandbox.Mount{{Source: env.attacker, Destination: attackerDir, ReadOnly: true}},
	}
}
