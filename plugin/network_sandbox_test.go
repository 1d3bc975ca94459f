package plugin

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/netplug"
	"github.com/berth-dev/berth/sandbox"
	"github.com/berth-dev/berth/security"
)

// A sandbox whose Network is a plugin sees, from the inside, the
// interface, address and names the plugin made, and the plugin's
// attachment is gone once the sandbox is.
func TestNetworkPluginInSandbox(t *testing.T) {
	n := openTestNetwork(t, buildTestNetwork(t).sdk, nil)
	e, err := testenv.Setup(testenv.Options{
		Name:   "berth-plugintest",
		Images: map[string]string{"alpine:test": testenv.Alpine},
		// A network of the set-up's that this test never attaches to.
		Bridge: "berth-pltest", Subnet: netip.MustParsePrefix("10.219.77.0/24"),
	})
	t.Cleanup(e.Close)
	if err != nil {
		t.Fatal(err)
	}
	// Strict gives the sandbox a user namespace, which then owns its
	// network namespace: the plugin and berth's check must get in all
	// the same.
	for name, sec := range map[string]*security.Config{"Default": nil, "Strict": security.Strict()} {
		t.Run(name, func(t *testing.T) { runOnTestNetwork(t, e, n, sec) })
	}

	// netplug's pool of namespaces attached ahead of time takes a plugin
	// as it takes a CNI network, and detaches all it made on Close.
	t.Run("Pool", func(t *testing.T) {
		pool, err := netplug.NewPool(n, 1, nil)
		if err != nil {
			t.Fatal(err)
		}
		var out strings.Builder
		sb := sandbox.New("alpine:test", &sandbox.Options{
			Args: []string{"ip", "-4", "addr", "show", "eth0"}, NetworkPool: pool, Stdout: &out,
			Storage: e.Store, Cgroups: e.Cgroups, StateDir: e.StateDir,
		})
		res, err := sb.Run(t.Context())
		pool.Close()
		if err != nil || !res.Success() {
			t.Fatalf("run: %v, %+v", err, res)
		}
		if a := sb.Attachment(); a == nil || len(a.IPs) != 1 || !strings.Contains(out.String(), "inet "+a.IPs[0].String()) {
			t.Errorf("attachment %+v, the sandbox saw:\n%s", a, out.String())
		}
		if ids, err := n.Attached(t.Context()); err != nil || len(ids) != 0 {
			t.Errorf("still attached after the pool's Close: %v, %v", ids, err)
		}
	})
}

func runOnTestNetwork(t *testing.T, e *testenv.Env, n *Network, sec *security.Config) {
	var out, errOut strings.Builder
	sb := sandbox.New("alpine:test", &sandbox.Options{
		Args:       []string{"sh", "-c", "ip -4 addr show eth0; ip route; cat /etc/hosts /etc/resolv.conf"},
		Hostname:   "web",
		Network:    n,
		ExtraHosts: []netplug.HostEntry{{IP: netip.MustParseAddr("10.99.0.7"), Names: []string{"registry.internal"}}},
		Stdout:     &out, Stderr: &errOut,
		Storage: e.Store, Cgroups: e.Cgroups, StateDir: e.StateDir,
		Security: sec,
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
	for _, want := range []string{
		"inet " + a.IPs[0].String(),                           // ip addr
		"default via " + a.Gateway.String(),                   // ip route
		a.IPs[0].Addr().String() + "\tweb\n",                  // its own name
		a.Gateway.String() + "\tgateway.test host-" + sb.ID(), // the plugin's hosts
		"10.99.0.7\tregistry.internal\n",                      // ExtraHosts
		"nameserver " + a.Gateway.String(),                    // the plugin's DNS
	} {
		if !strings.Contains(got, want) {
			t.Errorf("the sandbox saw no %q in:\n%s", want, got)
		}
	}
	if ids, err := n.Attached(t.Context()); err != nil || len(ids) != 0 {
		t.Errorf("still attached after the sandbox: %v, %v", ids, err)
	}
}
