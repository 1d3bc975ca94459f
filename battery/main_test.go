package battery

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"

	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/internal/testenv"
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
	e, err := testenv.Setup(testenv.Options{
		Name:   "berth-battery",
		Images: map[string]string{image: testenv.Alpine},
		Bridge: "berthbat0", Subnet: netip.MustParsePrefix("10.216.76.0/24"),
	})
	defer e.Close()
	if err == nil {
		env.dir, env.stateDir = e.Dir, e.StateDir
		env.store, env.cgroups, env.nets = e.Store, e.Cgroups, e.Nets
		env.attacker, err = buildAttacker(e.Dir)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "set up the battery:", err)
		return 1
	}
	// The fixtures (loop device, network, its long-lived sandbox) go
	// first, before what they were made in.
	defer fixtures.release()
	return m.Run()
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
