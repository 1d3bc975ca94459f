package sandbox

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"testing"

	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/layerfs"
	"github.com/berth-dev/berth/netplug"
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
	case "keeprootfs":
		os.Exit(keepRootfsProcess())
	case "supervise":
		os.Exit(supervisedProcess())
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
	e, err := testenv.Setup(testenv.Options{
		Name:   "berth-test",
		Images: map[string]string{"alpine:test": testenv.Alpine, "busybox:test": testenv.Busybox},
		Bridge: "berth-sbtest", Subnet: netip.MustParsePrefix("10.216.0.0/24"),
	})
	defer e.Close()
	if err != nil {
		fmt.Fprintln(os.Stderr, "set up sandbox tests:", err)
		return 1
	}
	testEnv.dir, testEnv.stateDir = e.Dir, e.StateDir
	testEnv.store, testEnv.cgroups, testEnv.nets = e.Store, e.Cgroups, e.Nets
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
		if os.Getenv("BERTH_TEST_RESET") != "" {
			if err := sb.Reset(context.Background()); err != nil {
				fmt.Println(err)
				return 1
			}
		}
	}
	fmt.Println("started")
	select {}
}

// syncBuffer is a bytes.Buffer that a test may read while the sandbox's
// output is still being copied into it.
type syncBuffer = testenv.SyncBuffer
