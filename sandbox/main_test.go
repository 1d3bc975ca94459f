package sandbox

import (
	"net/netip"
	"os/exec"

	"github.com/berth-dev/berth/netplug"

	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/layerfs"
)

// testEnv is shared by the package's tests: a store holding the real test
// images, and where sandbox state goes.
var testEnv struct {
	nets     *netplug.Networks
	dir      string // removed at the end
	store    *layerfs.Store
	cgroups  *cgroup.Manager
	stateDir string
}

func TestMain(m *testing.M) {
	switch os.Getenv("BERTH_TEST_HOST") {
	case "":
	case "fdlayout":
		os.Exit(fdLayoutProcess())
	default:
		os.Exit(hostProcess())
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "sandbox tests must run as root: they create namespaces, mounts and cgroups")
		os.Exit(1)
	}
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	// The bridge plugin turns on the host's IPv4 forwarding; the tests
	// leave it as they found it.
	const forward = "/proc/sys/net/ipv4/ip_forward"
	if was, err := os.ReadFile(forward); err == nil {
		defer os.WriteFile(forward, was, 0o644)
	}
	dir, err := os.MkdirTemp("", "berth-sandbox-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	// Root of a sandbox's user namespace is an ordinary id on the host
	// and must be able to reach the store and state under here.
	if err := os.Chmod(dir, 0o711); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	testEnv.dir = dir
	testEnv.stateDir = filepath.Join(dir, "state")
	testEnv.store, err = layerfs.Open(filepath.Join(dir, "store"), nil)
	if err == nil {
		testEnv.cgroups, err = cgroup.NewManager(cgroup.Options{Parent: fmt.Sprintf("berth-test-%d", os.Getpid())})
	}
	defer testEnv.cgroups.RemoveParent()
	for _, img := range []struct{ src, name string }{
		{"alpine-minirootfs-3.20.3-x86_64.tar.gz", "alpine:test"},
		{"busybox-1.38-musl-oci", "busybox:test"},
	} {
		if err != nil {
			break
		}
		_, err = testEnv.store.Import(context.Background(), filepath.Join("..", "..", "shared", "images", img.src), &layerfs.ImportOptions{Name: img.name})
	}
	if err == nil {
		err = ensureCNIPlugins()
	}
	if err == nil {
		// A network of the tests' own, so that they neither take nor
		// disturb the addresses of the default one.
		testEnv.nets, err = netplug.Open(&netplug.Options{
			ConfigDir: filepath.Join(dir, "networks"),
			RunDir:    filepath.Join(dir, "run-networks"),
			Default:   netplug.NetworkOptions{Bridge: "berth-sbtest", Subnet: netip.MustParsePrefix("10.216.0.0/24")},
		})
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "set up sandbox tests:", err)
		return 1
	}
	defer testEnv.nets.Prune(context.Background())
	return m.Run()
}

// opts returns Options wired to the test store, with extra applied.
func opts(extra func(*Options)) *Options {
	o := &Options{Storage: testEnv.store, Cgroups: testEnv.cgroups, StateDir: testEnv.stateDir}
	if extra != nil {
		extra(o)
	}
	return o
}

// hostProcess is a host program that another test kills: it starts a
// sandbox in the store, state directory and cgroup parent it is given,
// says so, and waits to be killed.
func hostProcess() int {
	store, err := layerfs.Open(os.Getenv("BERTH_TEST_STORE"), nil)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	cgm, err := cgroup.NewManager(cgroup.Options{Parent: os.Getenv("BERTH_TEST_CGROUP_PARENT")})
	if err != nil {
		fmt.Println(err)
		return 1
	}
	nets, err := netplug.Open(&netplug.Options{
		ConfigDir: os.Getenv("BERTH_TEST_NET_CONFIG"), RunDir: os.Getenv("BERTH_TEST_NET_RUN"),
		Default: netplug.NetworkOptions{Bridge: "berth-sbtest", Subnet: netip.MustParsePrefix("10.216.0.0/24")},
	})
	if err != nil {
		fmt.Println(err)
		return 1
	}
	bridge, err := nets.Get(context.Background(), "bridge")
	if err != nil {
		fmt.Println(err)
		return 1
	}
	for i := 0; i < 3; i++ {
		sb := New("alpine:test", &Options{Storage: store, Cgroups: cgm, StateDir: os.Getenv("BERTH_TEST_STATE"), Args: []string{"sleep", "1000"}})
		if i == 0 {
			// One on a bridge with a published port, so that Recover
			// has a veth, rules and a lease to reclaim.
			sb.opts.Network = bridge
			sb.opts.Ports = []netplug.PortMapping{{HostIP: "127.0.0.1", ContainerPort: 80, Protocol: "tcp"}}
		}
		if i == 1 {
			// One with a disk quota, whose filesystem, loop device and
			// image Recover must free.
			sb.opts.DiskQuota = 4 << 20
		}
		if err := sb.Start(context.Background()); err != nil {
			fmt.Println(err)
			return 1
		}
	}
	fmt.Println("started")
	select {}
}

// syncBuffer is a bytes.Buffer that a test may read while the sandbox's
// output is still being copied into it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// ensureCNIPlugins builds the CNI plugins into netplug's default directory
// unless they are there at go.mod's version already (a second, at most).
func ensureCNIPlugins() error {
	out, err := exec.Command("../hack/build-cni.sh").CombinedOutput()
	if err != nil {
		return fmt.Errorf("build CNI plugins: %v: %s", err, out)
	}
	return nil
}
