package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/berth-dev/berth/internal/atomicfile"
	"github.com/berth-dev/berth/plugin"
)

// An attached namespace has eth0 with the second address of a /31, a
// default route through the host end, and reaches a server on the host
// end's address; Detach leaves nothing behind.
func TestAttachDetach(t *testing.T) {
	needRoot(t)
	n := newTestNetwork(t, "10.218.0.0/24")
	ns := newNS(t)
	id := testID(t, "a")
	r, err := attach(t, n, id, ns, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := r.Attachment
	if a.Interface != "eth0" || len(a.IPs) != 1 || a.IPs[0].Bits() != 31 || a.IPs[0].Addr() != a.Gateway.Next() {
		t.Fatalf("attachment %+v: want eth0 with the second address of a /31 whose first is the gateway", a)
	}
	if want := netip.MustParsePrefix("10.218.0.0/24"); !want.Contains(a.Gateway) {
		t.Errorf("gateway %s outside the subnet %s", a.Gateway, want)
	}
	h := ns.handle(t)
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := h.AddrList(eth0, netlink.FAMILY_V4)
	if err != nil || len(addrs) != 1 || addrs[0].IPNet.String() != a.IPs[0].String() {
		t.Errorf("eth0 has %v (%v), want %s", addrs, err, a.IPs[0])
	}
	routes, err := h.RouteList(eth0, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(routes, func(r netlink.Route) bool {
		ones, _ := r.Dst.Mask.Size()
		return (r.Dst == nil || ones == 0) && r.Gw.String() == a.Gateway.String()
	}) {
		t.Errorf("no default route via %s in %v", a.Gateway, routes)
	}

	hostIf := hostIfName(id)
	for path, want := range map[string]string{
		"ipv4/conf/%s/rp_filter":           "1",
		"ipv4/conf/%s/forwarding":          "0",
		"ipv4/conf/%s/proxy_arp":           "0",
		"ipv4/conf/%s/route_localnet":      "0",
		"ipv4/conf/%s/accept_source_route": "0",
		"ipv6/conf/%s/disable_ipv6":        "1",
	} {
		if got := readSysctl(t, fmt.Sprintf(path, hostIf)); got != want {
			t.Errorf("%s = %s, want %s", fmt.Sprintf(path, hostIf), got, want)
		}
	}

	// A server on the host end's address answers the sandbox.
	l, err := net.Listen("tcp4", net.JoinHostPort(a.Gateway.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err == nil {
			c.Write([]byte("hello from the host"))
			c.Close()
		}
	}()
	var got string
	err = ns.do(func() error {
		c, err := net.DialTimeout("tcp4", l.Addr().String(), 10*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		b := make([]byte, 64)
		k, _ := c.Read(b)
		got = string(b[:k])
		return nil
	})
	if err != nil || got != "hello from the host" {
		t.Fatalf("sandbox to host: %q, %v", got, err)
	}

	if ids, err := n.List(context.Background()); err != nil || !slices.Equal(ids, []string{id}) {
		t.Errorf("List = %v, %v; want [%s]", ids, err, id)
	}
	if err := n.Detach(context.Background(), id, ns.path); err != nil {
		t.Fatal(err)
	}
	assertGone(t, n, id)
	if _, err := h.LinkByName("eth0"); err == nil {
		t.Error("eth0 left in the sandbox's namespace")
	}
	if err := n.Detach(context.Background(), id, ns.path); !errors.Is(err, plugin.ErrNotFound) {
		t.Errorf("second Detach: %v, want ErrNotFound", err)
	}
}

// assertGone checks that nothing of id is left: host end, record.
func assertGone(t *testing.T, n *p2pNetwork, id string) {
	t.Helper()
	if linkExists(t, hostIfName(id)) {
		t.Errorf("host end %s left", hostIfName(id))
	}
	if _, err := os.Lstat(n.state.path(id)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("record of %s left: %v", id, err)
	}
	if ids, err := n.List(context.Background()); err != nil || slices.Contains(ids, id) {
		t.Errorf("List = %v, %v after detaching %s", ids, err, id)
	}
	ents, _ := os.ReadDir(n.state.dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), id) {
			t.Errorf("state directory holds %s", e.Name())
		}
	}
}

// Attaching an id twice is ErrExists and leaves the first attachment
// alone; concurrent attaches get distinct addresses.
func TestAttachTwiceAndConcurrent(t *testing.T) {
	needRoot(t)
	n := newTestNetwork(t, "10.218.1.0/24")
	id := testID(t, "first")
	first := mustAttach(t, n, id, newNS(t), nil)
	if _, err := attach(t, n, id, newNS(t), nil); !errors.Is(err, plugin.ErrExists) {
		t.Fatalf("second attach of %s: %v, want ErrExists", id, err)
	}
	if !linkExists(t, hostIfName(id)) {
		t.Fatal("the failed second attach removed the first's link")
	}

	const k = 8
	var wg sync.WaitGroup
	results := make([]netip.Addr, k)
	errs := make([]error, k)
	nss := make([]*testNS, k)
	for i := range k {
		nss[i] = newNS(t)
	}
	for i := range k {
		wg.Go(func() {
			r, err := attach(t, n, testID(t, fmt.Sprint(i)), nss[i], nil)
			errs[i] = err
			if err == nil {
				results[i] = r.IPs[0].Addr()
			}
		})
	}
	wg.Wait()
	seen := map[netip.Addr]bool{first.IPs[0].Addr(): true}
	for i := range k {
		id := testID(t, fmt.Sprint(i))
		t.Cleanup(func() { n.Detach(context.Background(), id, "") })
		if errs[i] != nil {
			t.Errorf("attach %d: %v", i, errs[i])
			continue
		}
		if seen[results[i]] {
			t.Errorf("address %s handed out twice", results[i])
		}
		seen[results[i]] = true
	}
}

// A plugin that dies after attaching, or in the middle of it, leaves
// records from which another process lists and detaches everything.
func TestDetachByRestartedPlugin(t *testing.T) {
	needRoot(t)
	n := newTestNetwork(t, "10.218.2.0/24")
	done := testID(t, "done")
	mustAttach(t, n, done, newNS(t), nil)
	// Killed between the record and the link's configuration: a record
	// and a bare veth pair.
	half := testID(t, "half")
	ns := newNS(t)
	l, err := n.reserve(context.Background(), half, netip.MustParsePrefix("10.218.2.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	nsFd, err := openNetns(ns.path)
	if err != nil {
		t.Fatal(err)
	}
	err = netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: l.HostIf}, PeerName: sandboxIf, PeerNamespace: netlink.NsFd(nsFd)})
	nsFd.Close()
	if err != nil {
		t.Fatal(err)
	}
	// Killed between the record and the veth pair.
	bare := testID(t, "bare")
	if _, err := n.reserve(context.Background(), bare, netip.MustParsePrefix("10.218.2.0/24")); err != nil {
		t.Fatal(err)
	}

	restarted := newP2PNetwork(n.state.dir, n.defaults, n.log)
	ids, err := restarted.List(context.Background())
	slices.Sort(ids)
	want := []string{done, half, bare}
	slices.Sort(want)
	if err != nil || !slices.Equal(ids, want) {
		t.Fatalf("restarted List = %v, %v; want %v", ids, err, want)
	}
	for _, id := range ids {
		if err := restarted.Detach(context.Background(), id, ""); err != nil {
			t.Errorf("restarted Detach %s: %v", id, err)
		}
		assertGone(t, restarted, id)
	}
}

// Once the sandbox's namespace is gone (the kernel deletes the pair with
// it), Detach by id still removes the record.
func TestDetachAfterNamespaceGone(t *testing.T) {
	needRoot(t)
	n := newTestNetwork(t, "10.218.3.0/24")
	ns := newNS(t)
	id := testID(t, "a")
	mustAttach(t, n, id, ns, nil)
	ns.kill()
	// The kernel dismantles a namespace in the background: wait until it
	// has deleted the pair, so that Detach finds no link.
	for i := 0; linkExists(t, hostIfName(id)); i++ {
		if i == 500 {
			t.Fatal("the host end outlived the namespace by 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := n.Detach(context.Background(), id, ns.path); err != nil {
		t.Fatal(err)
	}
	assertGone(t, n, id)
}

// A subnet that overlaps a route of the host's is refused, naming the
// route; the plugin's own links are no clash.
func TestSubnetOverlapRefused(t *testing.T) {
	needRoot(t)
	// A veth pair stands in for any interface with an address: this
	// kernel has no dummy interfaces.
	pair := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: fmt.Sprintf("p2pt%d", os.Getpid())}, PeerName: fmt.Sprintf("p2pu%d", os.Getpid())}
	if err := netlink.LinkAdd(pair); err != nil {
		t.Fatal(err)
	}
	defer netlink.LinkDel(pair)
	if err := netlink.AddrAdd(pair, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP("10.218.4.129"), Mask: net.CIDRMask(25, 32)}}); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(pair); err != nil {
		t.Fatal(err)
	}
	n := newTestNetwork(t, "10.218.4.0/24")
	id := testID(t, "a")
	_, err := attach(t, n, id, newNS(t), nil)
	if !errors.Is(err, plugin.ErrInvalid) {
		t.Fatalf("attach on a subnet overlapping 10.218.4.128/25: %v, want ErrInvalid", err)
	}
	t.Log(err)
	assertGone(t, n, id)
	// A subnet beside the route is fine, also with a link of ours in it.
	mustAttach(t, n, testID(t, "b"), newNS(t), map[string]string{settingSubnet: "10.218.4.0/25"})
	mustAttach(t, n, testID(t, "c"), newNS(t), map[string]string{settingSubnet: "10.218.4.0/25"})
}

// Bad settings and requests are refused before anything is made.
func TestAttachRefusesBadInput(t *testing.T) {
	needRoot(t)
	n := newTestNetwork(t, "10.218.5.0/24")
	ns := newNS(t)
	for name, opts := range map[string]map[string]string{
		"unknown setting": {"subnett": "10.218.5.0/24"},
		"IPv6 subnet":     {settingSubnet: "fd00::/64"},
		"host bits":       {settingSubnet: "10.218.5.1/24"},
		"loopback":        {settingSubnet: "127.0.0.0/16"},
		"link-local":      {settingSubnet: "169.254.0.0/16"},
		"too small":       {settingSubnet: "10.218.5.0/31"},
		"bad forward":     {settingForward: "maybe"},
		"bad dns":         {settingDNS: "one.one.one.one"},
	} {
		if _, err := attach(t, n, testID(t, "x"), ns, opts); !errors.Is(err, plugin.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	if _, err := attach(t, n, "../escape", ns, nil); !errors.Is(err, plugin.ErrInvalid) {
		t.Errorf("Attach id ../escape: %v, want ErrInvalid", err)
	}
	if err := n.Detach(context.Background(), "../escape", ""); !errors.Is(err, plugin.ErrNotFound) {
		t.Errorf("Detach id ../escape: %v, want ErrNotFound", err)
	}
	self := fmt.Sprintf("/proc/%d/ns/net", os.Getpid())
	_, err := n.Attach(context.Background(), &plugin.AttachRequest{ID: testID(t, "self"), NetnsPath: self})
	if !errors.Is(err, plugin.ErrInvalid) {
		t.Errorf("the plugin's own namespace: %v, want ErrInvalid", err)
	}
	mnt := fmt.Sprintf("/proc/%d/ns/mnt", ns.cmd.Process.Pid)
	_, err = n.Attach(context.Background(), &plugin.AttachRequest{ID: testID(t, "mnt"), NetnsPath: mnt})
	if !errors.Is(err, plugin.ErrInvalid) {
		t.Errorf("a mount namespace: %v, want ErrInvalid", err)
	}
	if ids, _ := n.List(context.Background()); len(ids) != 0 {
		t.Errorf("refused attaches left records of %v", ids)
	}
	if names := hostLinksWithPrefix(t, hostIfName(testID(t, "x"))); len(names) != 0 {
		t.Errorf("refused attaches left %v", names)
	}
}

// A packet from the sandbox with a source address other than its own is
// dropped by the host end; one with its own gets through (so the test
// sees what it means to). Each of the two guards, strict rp_filter and
// the source filter, is enough alone: the first is loose on hosts whose
// net.ipv4.conf.all.rp_filter is 2.
func TestSpoofedSourceDropped(t *testing.T) {
	needRoot(t)
	n := newTestNetwork(t, "10.218.6.0/24")
	for _, c := range []struct {
		name  string
		relax func(t *testing.T, host netlink.Link)
	}{
		{"both", func(*testing.T, netlink.Link) {}},
		{"source filter alone", func(t *testing.T, host netlink.Link) {
			path := "/proc/sys/net/ipv4/conf/" + host.Attrs().Name + "/rp_filter"
			if err := os.WriteFile(path, []byte("0"), 0); err != nil {
				t.Fatal(err)
			}
		}},
		{"rp_filter alone", func(t *testing.T, host netlink.Link) {
			if readSysctl(t, "ipv4/conf/all/rp_filter") == "2" {
				t.Skip("net.ipv4.conf.all.rp_filter is 2 here: rp_filter alone is loose")
			}
			clsact := &netlink.GenericQdisc{
				QdiscAttrs: netlink.QdiscAttrs{LinkIndex: host.Attrs().Index, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
				QdiscType:  "clsact",
			}
			if err := netlink.QdiscDel(clsact); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ns := newNS(t)
			id := testID(t, "a")
			r := mustAttach(t, n, id, ns, nil)
			other := mustAttach(t, n, testID(t, "other"), newNS(t), nil)
			host, err := netlink.LinkByName(hostIfName(id))
			if err != nil {
				t.Fatal(err)
			}
			c.relax(t, host)
			mac := host.Attrs().HardwareAddr
			port, got := udpListener(t, net.JoinHostPort(r.Gateway.String(), "0"))
			own := r.IPs[0].Addr()
			ns.sendForged(t, mac, own, r.Gateway, port, "own-1")
			if msg := <-got; msg != "own-1" {
				t.Fatalf("got %q, want own-1", msg)
			}
			for _, forged := range []netip.Addr{
				other.IPs[0].Addr(),               // a neighbour's
				netip.MustParseAddr("192.0.2.77"), // anyone's
				netip.MustParseAddr("127.0.0.1"),  // the host's loopback
				r.Gateway,                         // the host end's own
			} {
				ns.sendForged(t, mac, forged, r.Gateway, port, "forged-from-"+forged.String())
			}
			// The datagrams arrive in order: once the last genuine one is
			// in, any forged one accepted would have been read before it.
			ns.sendForged(t, mac, own, r.Gateway, port, "own-2")
			for msg := range got {
				if msg == "own-2" {
					break
				}
				t.Errorf("the host accepted %s", msg)
			}
		})
	}
}

// The host's loopback is out of the sandbox's reach: a packet for
// 127.0.0.1 sent to the host end is dropped, while the same to the host
// end's address is delivered.
func TestHostLoopbackUnreachable(t *testing.T) {
	needRoot(t)
	n := newTestNetwork(t, "10.218.7.0/24")
	ns := newNS(t)
	id := testID(t, "a")
	r := mustAttach(t, n, id, ns, nil)
	host, err := netlink.LinkByName(hostIfName(id))
	if err != nil {
		t.Fatal(err)
	}
	mac := host.Attrs().HardwareAddr
	loPort, loGot := udpListener(t, "127.0.0.1:0")
	port, got := udpListener(t, net.JoinHostPort(r.Gateway.String(), "0"))
	own := r.IPs[0].Addr()
	ns.sendForged(t, mac, own, netip.MustParseAddr("127.0.0.1"), loPort, "to-loopback")
	ns.sendForged(t, mac, own, r.Gateway, port, "to-host-end")
	if msg := <-got; msg != "to-host-end" {
		t.Fatalf("got %q, want to-host-end", msg)
	}
	select {
	case msg := <-loGot:
		t.Errorf("the host's loopback got %q from the sandbox", msg)
	default:
	}
}

// The sandbox cannot send broadcasts or multicasts to the host, where
// services listening on every interface (DHCP, mDNS, SSDP) would take
// them; a unicast datagram to the same listener gets through.
func TestBroadcastDropped(t *testing.T) {
	needRoot(t)
	n := newTestNetwork(t, "10.218.10.0/24")
	ns := newNS(t)
	id := testID(t, "a")
	r := mustAttach(t, n, id, ns, nil)
	host, err := netlink.LinkByName(hostIfName(id))
	if err != nil {
		t.Fatal(err)
	}
	mac := host.Attrs().HardwareAddr
	port, got := udpListener(t, "0.0.0.0:0")
	own := r.IPs[0].Addr()
	for _, dst := range []string{"255.255.255.255", "224.0.0.1", "239.255.255.250"} {
		ns.sendForged(t, mac, own, netip.MustParseAddr(dst), port, "to-"+dst)
	}
	ns.sendForged(t, mac, own, r.Gateway, port, "unicast")
	for msg := range got {
		if msg == "unicast" {
			break
		}
		t.Errorf("the host accepted %s", msg)
	}
}

// ARP from the sandbox that claims another sender address teaches the
// host nothing, so that a sandbox cannot fill the host's neighbour table
// (a host-wide limit) even where rp_filter is loose; ARP with its own
// address is answered and learnt.
func TestForgedARPIgnored(t *testing.T) {
	needRoot(t)
	n := newTestNetwork(t, "10.218.14.0/24")
	ns := newNS(t)
	id := testID(t, "a")
	r := mustAttach(t, n, id, ns, nil)
	host, err := netlink.LinkByName(hostIfName(id))
	if err != nil {
		t.Fatal(err)
	}
	// As where net.ipv4.conf.all.rp_filter is 2: the filter alone.
	if err := os.WriteFile("/proc/sys/net/ipv4/conf/"+host.Attrs().Name+"/rp_filter", []byte("0"), 0); err != nil {
		t.Fatal(err)
	}
	mac := host.Attrs().HardwareAddr
	forged := []netip.Addr{netip.MustParseAddr("192.0.2.78"), netip.MustParseAddr("10.218.14.200")}
	for _, f := range forged {
		ns.sendARPRequest(t, mac, f, r.Gateway)
	}
	own := r.IPs[0].Addr()
	ns.sendARPRequest(t, mac, own, r.Gateway)
	// ARP is processed in order: once the genuine sender is learnt, a
	// forged one accepted would be too.
	var neigh []netip.Addr
	for range 100 {
		if neigh = hostNeighbours(t, host); slices.Contains(neigh, own) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !slices.Contains(neigh, own) {
		t.Fatalf("the host learnt no entry for the sandbox's own ARP (%v): the test sees nothing", neigh)
	}
	for _, f := range forged {
		if slices.Contains(neigh, f) {
			t.Errorf("the host learnt a neighbour entry for the forged sender %s", f)
		}
	}
}

// Without the forward setting a sandbox reaches the host end's address
// only: not another of the host's addresses, not another sandbox behind
// the host, even after the host end's forwarding sysctl is turned on (as
// any change of net.ipv4.ip_forward does). With it, the sandbox reaches
// the host's other addresses, and the host routes between sandboxes if it
// forwards.
func TestForwardSetting(t *testing.T) {
	needRoot(t)
	// Another address of the host's, on an interface of the test's.
	other := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: fmt.Sprintf("p2pf%d", os.Getpid())}, PeerName: fmt.Sprintf("p2pg%d", os.Getpid())}
	if err := netlink.LinkAdd(other); err != nil {
		t.Fatal(err)
	}
	defer netlink.LinkDel(other)
	if err := netlink.AddrAdd(other, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP("10.218.15.1"), Mask: net.CIDRMask(24, 32)}}); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(other); err != nil {
		t.Fatal(err)
	}
	hostOther := listenTCP(t, nil, "10.218.15.1:0")

	// New interfaces forward if this says so; ip_forward sets it too.
	hostForwards := readSysctl(t, "ipv4/conf/default/forwarding") == "1"
	n := newTestNetwork(t, "10.218.8.0/24")
	for _, forward := range []bool{false, true} {
		opts := map[string]string{settingForward: fmt.Sprint(forward)}
		a, b := newNS(t), newNS(t)
		ida, idb := testID(t, fmt.Sprint("a", forward)), testID(t, fmt.Sprint("b", forward))
		ra := mustAttach(t, n, ida, a, opts)
		rb := mustAttach(t, n, idb, b, opts)
		if !forward {
			for _, id := range []string{ida, idb} {
				if err := os.WriteFile("/proc/sys/net/ipv4/conf/"+hostIfName(id)+"/forwarding", []byte("1"), 0); err != nil {
					t.Fatal(err)
				}
			}
		}
		gateway := listenTCP(t, nil, net.JoinHostPort(ra.Gateway.String(), "0"))
		sandboxB := listenTCP(t, b, net.JoinHostPort(rb.IPs[0].Addr().String(), "0"))
		for _, c := range []struct {
			what, addr string
			want       bool
		}{
			{"the gateway", gateway, true},
			{"another address of the host's", hostOther, forward},
			{"another sandbox", sandboxB, forward && hostForwards},
		} {
			// Dropped, the packets get no ICMP error: the dial times out.
			err := a.do(func() error {
				c, err := net.DialTimeout("tcp4", c.addr, 3*time.Second)
				if err == nil {
					c.Close()
				}
				return err
			})
			if got := err == nil; got != c.want {
				t.Errorf("forward %v: sandbox to %s (%s): reached %v, want %v (%v)", forward, c.what, c.addr, got, c.want, err)
			}
		}
	}
}

// listenTCP accepts and closes connections on addr, in ns or the host's
// namespace, until the test ends, and returns the address it listens on.
func listenTCP(t testing.TB, ns *testNS, addr string) string {
	t.Helper()
	var l net.Listener
	listen := func() (err error) { l, err = net.Listen("tcp4", addr); return }
	var err error
	if ns != nil {
		err = ns.do(listen)
	} else {
		err = listen()
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return l.Addr().String()
}

// Records are private to root; a write a killed plugin left half done is
// swept away; a damaged record stops allocation, with an error naming it,
// until Detach of its id removes it.
func TestRecords(t *testing.T) {
	needRoot(t)
	n := newTestNetwork(t, "10.218.9.0/24")
	if err := os.MkdirAll(n.state.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	temp := filepath.Join(n.state.dir, atomicfile.TempPrefix+"killed.json-123")
	if err := os.WriteFile(temp, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	id := testID(t, "a")
	mustAttach(t, n, id, newNS(t), nil)
	fi, err := os.Stat(n.state.path(id))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("record mode %v, want 0600", fi.Mode().Perm())
	}
	if _, err := os.Lstat(temp); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the half-written record %s is still there: %v", temp, err)
	}

	damaged := testID(t, "damaged")
	if err := os.WriteFile(n.state.path(damaged), []byte(`{"id":"x"`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := attach(t, n, testID(t, "b"), newNS(t), nil); err == nil || !strings.Contains(err.Error(), damaged) {
		t.Errorf("attach with a damaged record: %v, want an error naming %s", err, damaged)
	}
	if err := n.Detach(context.Background(), damaged, ""); err != nil {
		t.Fatalf("Detach of the damaged record's id: %v", err)
	}
	assertGone(t, n, damaged)
	mustAttach(t, n, testID(t, "c"), newNS(t), nil)
}

// The host answers ARP on a host end for the host end's address alone:
// the sandbox does not learn which other addresses the host has, even
// though the filter would drop what it then sent them.
func TestARPOnlyForHostEnd(t *testing.T) {
	needRoot(t)
	n := newTestNetwork(t, "10.218.21.0/24")
	ns := newNS(t)
	id := testID(t, "a")
	r := mustAttach(t, n, id, ns, nil)
	// Another of the host's addresses, on a veth pair of the test's.
	other := netip.MustParseAddr("192.0.2.77")
	name := fmt.Sprintf("p2pt%d", os.Getpid()%100000)
	pair := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name + "a"}, PeerName: name + "b"}
	if err := netlink.LinkAdd(pair); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netlink.LinkDel(pair) })
	if err := netlink.AddrAdd(pair, &netlink.Addr{IPNet: ipNet(other, 32)}); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(pair); err != nil {
		t.Fatal(err)
	}
	h := ns.handle(t)
	eth0, err := h.LinkByName(sandboxIf)
	if err != nil {
		t.Fatal(err)
	}
	// On the link, so that the sandbox asks for it by ARP.
	if err := h.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: ipNet(other, 32), Scope: netlink.SCOPE_LINK}); err != nil {
		t.Fatal(err)
	}
	state := func(a netip.Addr) int {
		neigh, err := h.NeighList(eth0.Attrs().Index, netlink.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range neigh {
			if ip, ok := netip.AddrFromSlice(e.IP); ok && ip.Unmap() == a {
				return e.State
			}
		}
		return netlink.NUD_NONE
	}
	resolve := func(a netip.Addr) int {
		if err := ns.do(func() error {
			c, err := net.Dial("udp4", net.JoinHostPort(a.String(), "9"))
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte("x"))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		for range 250 {
			if s := state(a); s&(netlink.NUD_INCOMPLETE|netlink.NUD_NONE) == 0 && s != netlink.NUD_NONE {
				return s
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("ARP for %s neither answered nor failed", a)
		return 0
	}
	if s := resolve(r.Gateway); s == netlink.NUD_FAILED {
		t.Fatalf("the host end's own address %s was not answered: the test sees nothing", r.Gateway)
	}
	if s := resolve(other); s != netlink.NUD_FAILED {
		t.Errorf("the host answered the sandbox's ARP for its address %s on another interface (state %#x)", other, s)
	}
}
