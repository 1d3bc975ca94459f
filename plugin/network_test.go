package plugin

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/netplug"
)

// testNetworkAlias marks the host ends testnetwork makes.
const testNetworkAlias = "berth-testnetwork:"

// testNetworkBins are the names the test plugin is run by.
type testNetworkBins struct {
	sdk    string // served by the SDK, announcing ports and dns
	raw    string // serving the protocol without the SDK
	nocaps string // served by the SDK, announcing no capability
}

// buildTestNetwork builds plugin/internal/testnetwork into a directory of
// the test's, and links it under the names it behaves differently by.
func buildTestNetwork(t testing.TB) testNetworkBins {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network plugin tests make namespaces and interfaces: they must run as root")
	}
	dir := t.TempDir()
	b := testNetworkBins{sdk: filepath.Join(dir, "testnetwork"), raw: filepath.Join(dir, "testnetwork-raw"),
		nocaps: filepath.Join(dir, "testnetwork-nocaps")}
	testBuild(t, "./internal/testnetwork", b.sdk)
	for _, name := range []string{b.raw, b.nocaps} {
		if err := os.Link(b.sdk, name); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// openTestNetwork opens the plugin at bin with settings, closed when the
// test ends, and checks then that the test left no interface behind.
func openTestNetwork(t testing.TB, bin string, settings map[string]string) *Network {
	t.Helper()
	n, err := OpenNetwork(t.Context(), bin, &Options{RunDir: t.TempDir(), Settings: settings})
	if err != nil {
		t.Fatalf("open %s: %v", bin, err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		if left := testNetworkLinks(t); len(left) > 0 {
			t.Errorf("interfaces left behind: %v", left)
			for _, l := range left {
				if l, err := netlink.LinkByName(l); err == nil {
					netlink.LinkDel(l)
				}
			}
		}
		if left := testNetworkAddrs(t); len(left) > 0 {
			t.Errorf("addresses left behind on the host: %v", left)
		}
	})
	return n
}

// testNetworkSubnet is where testnetwork takes its addresses from.
var testNetworkSubnet = netip.MustParsePrefix("10.247.0.0/16")

// testNetworkAddrs lists the host's addresses in testnetwork's subnet.
func testNetworkAddrs(t testing.TB) []netip.Addr {
	t.Helper()
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var out []netip.Addr
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok && testNetworkSubnet.Contains(ip) {
			out = append(out, ip)
		}
	}
	return out
}

// testNetworkLinks names the host ends testnetwork made that are left.
func testNetworkLinks(t testing.TB) []string {
	t.Helper()
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Alias, testNetworkAlias) {
			names = append(names, l.Attrs().Name)
		}
	}
	return names
}

// addrsIn lists the addresses of interface name in the namespace at path,
// as the kernel has them.
func addrsIn(t *testing.T, path, name string) []netip.Prefix {
	t.Helper()
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
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatalf("interface %s in the namespace: %v", name, err)
	}
	addrs, err := h.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var out []netip.Prefix
	for _, a := range addrs {
		ip, _ := netip.AddrFromSlice(a.IP.To4())
		ones, _ := a.Mask.Size()
		out = append(out, netip.PrefixFrom(ip, ones))
	}
	return out
}

// A plugin's attachment is real, checked, written into the hosts file,
// listed, and undone by Detach, after which the id is unknown.
func TestNetworkAttachDetach(t *testing.T) {
	bins := buildTestNetwork(t)
	ctx := t.Context()
	n := openTestNetwork(t, bins.sdk, nil)
	if !n.Info().Has(CapPorts) || !n.Info().Has(CapDNS) {
		t.Errorf("capabilities %v, want ports and dns", n.Info().Capabilities)
	}
	path := testenv.Netns(t)
	hosts := filepath.Join(t.TempDir(), "hosts")
	dns := &netplug.DNSConfig{Nameservers: []netip.Addr{netip.MustParseAddr("10.9.9.9")}, Search: []string{"corp.test"}}
	a, err := n.Attach(ctx, "sb-1", path, &netplug.AttachOptions{
		Hostname: "web", Aliases: []string{"www"},
		Ports:      []netplug.PortMapping{{ContainerPort: 80}, {HostIP: "0.0.0.0", HostPort: 8053, ContainerPort: 53, Protocol: "UDP"}},
		DNS:        dns,
		HostsFile:  hosts,
		ExtraHosts: []netplug.HostEntry{{IP: netip.MustParseAddr("10.99.0.7"), Names: []string{"registry.internal"}}},
	})
	if err != nil {
		t.Fatalf("attach: %v", err)
	}
	if a.Interface != "eth0" || len(a.IPs) != 1 || a.Network != "testnetwork" {
		t.Fatalf("attachment %+v", a)
	}
	if got := addrsIn(t, path, "eth0"); !slices.Contains(got, a.IPs[0]) {
		t.Errorf("eth0 has %v in the namespace, the attachment says %v", got, a.IPs)
	}
	wantPorts := []netplug.PortMapping{{HostPort: 40000, ContainerPort: 80, Protocol: "tcp"}, {HostPort: 8053, ContainerPort: 53, Protocol: "udp"}}
	if !slices.Equal(a.Ports, wantPorts) {
		t.Errorf("ports %+v, want %+v", a.Ports, wantPorts)
	}
	if !slices.Equal(a.DNS.Nameservers, dns.Nameservers) || !slices.Equal(a.DNS.Search, dns.Search) {
		t.Errorf("DNS %+v, want %+v", a.DNS, dns)
	}
	b, err := os.ReadFile(hosts)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{a.IPs[0].Addr().String() + "\tweb www\n", a.Gateway.String() + "\tgateway.test host-sb-1\n", "10.99.0.7\tregistry.internal\n"} {
		if !strings.Contains(string(b), line) {
			t.Errorf("hosts file lacks %q:\n%s", line, b)
		}
	}
	if ids, err := n.Attached(ctx); err != nil || !slices.Equal(ids, []string{"sb-1"}) {
		t.Errorf("attached: %v, %v", ids, err)
	}

	// A second Attach of the id is refused, and does not undo the first.
	if _, err := n.Attach(ctx, "sb-1", path, nil); !errors.Is(err, ErrExists) || !errors.Is(err, netplug.ErrAttached) {
		t.Errorf("second attach: %v, want ErrExists and netplug.ErrAttached", err)
	}
	if len(testNetworkLinks(t)) != 1 {
		t.Errorf("the refused second attach undid the first")
	}

	if err := n.Detach(ctx, "sb-1", path); err != nil {
		t.Fatalf("detach: %v", err)
	}
	if left := testNetworkLinks(t); len(left) > 0 {
		t.Errorf("detach left %v", left)
	}
	if err := n.Detach(ctx, "sb-1", path); !errors.Is(err, ErrNotFound) || !errors.Is(err, netplug.ErrNotFound) {
		t.Errorf("second detach: %v, want ErrNotFound and netplug.ErrNotFound", err)
	}
	if ids, err := n.Attached(ctx); err != nil || len(ids) != 0 {
		t.Errorf("attached after detach: %v, %v", ids, err)
	}
}

// What berth refuses before the plugin is asked: bad ids, paths that are
// no network namespace, and what the plugin did not announce it does.
func TestNetworkAttachRefusesBadRequests(t *testing.T) {
	bins := buildTestNetwork(t)
	ctx := t.Context()
	n := openTestNetwork(t, bins.sdk, nil)
	path := testenv.Netns(t)
	notNetns := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notNetns, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		id, path string
		opts     *netplug.AttachOptions
		want     error
	}{
		{"../x", path, nil, ErrInvalid},
		{"sb\n1", path, nil, ErrInvalid},
		{"sb", notNetns, nil, ErrInvalid},
		{"sb", "/proc/self/ns/mnt", nil, ErrInvalid},
		{"sb", "relative/netns", nil, ErrInvalid},
		{"sb", "", nil, ErrInvalid},
		{"sb", "/nonexistent/netns", nil, os.ErrNotExist},
		{"sb", path, &netplug.AttachOptions{Hostname: "web\n10.6.6.6 evil"}, ErrInvalid},
		{"sb", path, &netplug.AttachOptions{Ports: []netplug.PortMapping{{ContainerPort: 80, Protocol: "sctp"}}}, ErrInvalid},
		{"sb", path, &netplug.AttachOptions{Ports: []netplug.PortMapping{{HostPort: 80}}}, ErrInvalid},
	} {
		if _, err := n.Attach(ctx, tc.id, tc.path, tc.opts); err == nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("attach %q %s %+v: %v, want %v", tc.id, tc.path, tc.opts, err, tc.want)
		}
	}

	// A plugin without the capabilities is not sent ports or DNS.
	r := openTestNetwork(t, bins.nocaps, nil)
	for _, opts := range []*netplug.AttachOptions{
		{Ports: []netplug.PortMapping{{ContainerPort: 80}}},
		{DNS: &netplug.DNSConfig{Nameservers: []netip.Addr{netip.MustParseAddr("10.9.9.9")}}},
	} {
		if _, err := r.Attach(ctx, "sb", path, opts); !errors.Is(err, ErrUnsupported) {
			t.Errorf("attach with %+v to a plugin without the capability: %v, want ErrUnsupported", opts, err)
		}
	}
	if ids, err := r.Attached(ctx); err != nil || len(ids) != 0 {
		t.Errorf("the plugin was asked anyway: attached %v, %v", ids, err)
	}
}

// Answers berth must not believe are refused, and what the plugin made
// for them is detached before Attach returns.
func TestNetworkRefusesLies(t *testing.T) {
	bins := buildTestNetwork(t)
	sdk, raw := bins.sdk, bins.raw
	path := testenv.Netns(t)
	for _, tc := range []struct {
		lie, bin, want string
	}{
		{"ino", raw, "inode"},
		{"garbage", raw, `"banana"`},
		{"loopback", raw, "loopback"},
		{"noaddr", raw, "10.247.255.254/31 is not on"},
		{"noif", raw, `"eth9" is not in the namespace`},
		{"hostsnl", raw, `"db\n10.66.6.6 example.com" is not a host name`},
		{"ports", raw, "2 ports published, 1 asked for"},
		{"netname", raw, "network name"},
		{"dns", raw, "search domain"},
		{"otherns", sdk, "is not in the namespace"},
	} {
		t.Run(tc.lie, func(t *testing.T) {
			n := openTestNetwork(t, tc.bin, map[string]string{"lie": tc.lie})
			hosts := filepath.Join(t.TempDir(), "hosts")
			_, err := n.Attach(t.Context(), "liar-"+tc.lie, path, &netplug.AttachOptions{
				Hostname: "web", HostsFile: hosts, Ports: []netplug.PortMapping{{ContainerPort: 80}},
			})
			if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("attach: %v, want ErrRefused naming %q", err, tc.want)
			}
			if left := testNetworkLinks(t); len(left) > 0 {
				t.Errorf("the refused attachment was not detached: %v", left)
			}
			if _, err := os.Stat(hosts); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("hosts file written from a refused answer: %v", err)
			}
		})
	}
}

// A plugin killed in the middle of Attach fails that Attach with
// ErrPluginExited; Attach has its restarted successor undo what it did,
// and the next Attach works. One killed between calls is started again
// by the next.
func TestNetworkPluginKilledMidAttach(t *testing.T) {
	sdk := buildTestNetwork(t).sdk
	ctx := t.Context()
	ready := filepath.Join(t.TempDir(), "ready")
	n := openTestNetwork(t, sdk, map[string]string{"lie": "block", "ready": ready})
	path := testenv.Netns(t)
	errc := make(chan error, 1)
	go func() {
		_, err := n.Attach(ctx, "killed", path, nil)
		errc <- err
	}()
	pid := waitForPid(t, ready, errc)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, ErrPluginExited) {
		t.Fatalf("attach: %v, want ErrPluginExited", err)
	}
	if left := testNetworkLinks(t); len(left) > 0 {
		t.Errorf("the killed plugin's attachment was not undone: %v", left)
	}
	a, err := n.Attach(ctx, "killed", path, nil)
	if err != nil {
		t.Fatalf("attach after the kill: %v", err)
	}
	if got := addrsIn(t, path, a.Interface); !slices.Equal(got, a.IPs) {
		t.Errorf("addresses %v, want %v", got, a.IPs)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("the killed plugin %d is still there: %v", pid, err)
	}

	// Killed between calls, as a sandbox runs: its Detach starts the
	// plugin again, and the new process detaches from the id alone.
	again := pluginPid(t, sdk)
	if again == pid {
		t.Fatalf("the plugin was not started again")
	}
	if err := syscall.Kill(again, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := n.Detach(ctx, "killed", path); err != nil {
		t.Errorf("detach after a second kill: %v", err)
	}
	if err := syscall.Kill(pluginPid(t, sdk), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if ids, err := n.Attached(ctx); err != nil || len(ids) != 0 {
		t.Errorf("attached after a third kill: %v, %v", ids, err)
	}
}

// pluginPid is the pid of the one process running bin.
func pluginPid(t *testing.T, bin string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if exe, err := os.Readlink("/proc/" + e.Name() + "/exe"); err == nil && exe == bin {
			pids = append(pids, pid)
		}
	}
	if len(pids) != 1 {
		t.Fatalf("processes running %s: %v, want one", bin, pids)
	}
	return pids[0]
}

// waitForPid waits for the plugin to write its pid into file, or for the
// attach to fail instead (errc).
func waitForPid(t *testing.T, file string, errc <-chan error) int {
	t.Helper()
	for {
		b, err := os.ReadFile(file)
		if err == nil && len(b) > 0 {
			pid, err := strconv.Atoi(string(b))
			if err != nil {
				t.Fatal(err)
			}
			return pid
		}
		select {
		case err := <-errc:
			t.Fatalf("attach returned before blocking: %v", err)
		case <-t.Context().Done():
			t.Fatal("the plugin never blocked")
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// A plugin that never answers is bounded by the caller's context, and
// what it made is detached all the same.
func TestNetworkPluginHangs(t *testing.T) {
	n := openTestNetwork(t, buildTestNetwork(t).sdk, map[string]string{"lie": "hang"})
	path := testenv.Netns(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	if _, err := n.Attach(ctx, "hung", path, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("attach: %v, want DeadlineExceeded", err)
	}
	if left := testNetworkLinks(t); len(left) > 0 {
		t.Errorf("the hung attachment was not undone: %v", left)
	}
}

// One plugin process serves attaches and detaches of many sandboxes at
// once, each getting its own link and address.
func TestNetworkConcurrentAttach(t *testing.T) {
	n := openTestNetwork(t, buildTestNetwork(t).sdk, nil)
	const sandboxes = 8
	paths := make([]string, sandboxes)
	for i := range paths {
		paths[i] = testenv.Netns(t)
	}
	ctx := t.Context()
	addrs := make([]netip.Prefix, sandboxes)
	var wg sync.WaitGroup
	errs := make(chan error, 2*sandboxes)
	for i, path := range paths {
		wg.Go(func() {
			a, err := n.Attach(ctx, "conc-"+strconv.Itoa(i), path, nil)
			if err != nil {
				errs <- err
				return
			}
			addrs[i] = a.IPs[0]
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	slices.SortFunc(addrs, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	if len(slices.Compact(addrs)) != sandboxes {
		t.Errorf("addresses given twice: %v", addrs)
	}
	if ids, err := n.Attached(ctx); err != nil || len(ids) != sandboxes {
		t.Errorf("attached: %v, %v", ids, err)
	}
	for i, path := range paths {
		wg.Go(func() {
			if err := n.Detach(ctx, "conc-"+strconv.Itoa(i), path); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
}

// What one Attach and Detach through a plugin costs, a veth pair made,
// checked in the namespace and removed each time.
func BenchmarkNetworkPluginAttachDetach(b *testing.B) {
	n := openTestNetwork(b, buildTestNetwork(b).sdk, nil)
	path := testenv.Netns(b)
	ctx := b.Context()
	var attach, detach time.Duration
	for b.Loop() {
		start := time.Now()
		if _, err := n.Attach(ctx, "bench", path, nil); err != nil {
			b.Fatal(err)
		}
		mid := time.Now()
		if err := n.Detach(ctx, "bench", path); err != nil {
			b.Fatal(err)
		}
		attach, detach = attach+mid.Sub(start), detach+time.Since(mid)
	}
	b.ReportMetric(float64(attach.Microseconds())/float64(b.N), "attach-µs/op")
	b.ReportMetric(float64(detach.Microseconds())/float64(b.N), "detach-µs/op")
}
