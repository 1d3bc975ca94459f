package netplug

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/osthread"
)

// How long a test waits for a packet that must not arrive.
const silence = time.Second

// mac returns the MAC address of an interface in the namespace.
func (ns *testNS) mac(ifname string) (net.HardwareAddr, error) {
	var mac net.HardwareAddr
	err := ns.do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err == nil {
			mac = ifi.HardwareAddr
		}
		return err
	})
	return mac, err
}

func bridgeMAC(t *testing.T, name string) (net.HardwareAddr, int) {
	t.Helper()
	br, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return br.Attrs().HardwareAddr, br.Attrs().Index
}

func addrPort(a netip.Addr, port int) string {
	return net.JoinHostPort(a.String(), strconv.Itoa(port))
}

// Once a sandbox publishes a port on 127.0.0.1, its bridge has
// route_localnet set; another sandbox on the bridge must still not reach
// what the host serves on 127.0.0.1 with hand-made packets (Kubernetes'
// CVE-2020-8558), while published ports keep working from the host's
// loopback, the host's address and the sandboxes.
func TestLoopbackUnreachableFromBridge(t *testing.T) {
	const bridge = "berth-t12"
	n := testNetworks(t, bridge, "10.215.12.0/24")
	ctx := t.Context()
	def := mustGet(t, n, DefaultNetwork)

	pub := newNS(t)
	pub.echoTCP(t, ":80", "web:")
	pubAtt, err := def.Attach(ctx, "lo-pub", pub.path, &AttachOptions{Ports: []PortMapping{
		{HostIP: "127.0.0.1", ContainerPort: 80}, {ContainerPort: 80},
	}})
	if err != nil {
		t.Fatal(err)
	}
	// The hole needs route_localnet on the bridge: check it is there.
	if v, err := os.ReadFile("/proc/sys/net/ipv4/conf/" + bridge + "/route_localnet"); strings.TrimSpace(string(v)) != "1" {
		t.Fatalf("route_localnet of %s: %q, %v; want 1 once a port is published on 127.0.0.1", bridge, v, err)
	}
	attacker := newNS(t)
	att, err := def.Attach(ctx, "lo-attacker", attacker.path, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := attacker.rawPort(ifName)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	gwMAC, _ := bridgeMAC(t, bridge)
	me, gw := att.IPs[0].Addr(), att.Gateway
	send := func(packet []byte) {
		t.Helper()
		if err := raw.send(ether(gwMAC, raw.mac, etherIPv4, packet)); err != nil {
			t.Fatal(err)
		}
	}

	loUDP, err := newUDPInbox("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer loUDP.Close()
	gwUDP, err := newUDPInbox(addrPort(gw, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer gwUDP.Close()
	loTCP, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer loTCP.Close()
	gwTCP, err := net.Listen("tcp4", addrPort(gw, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer gwTCP.Close()

	// The same hand-made packets to the host's address on the bridge
	// arrive: what follows tests the filter, not the frames.
	send(udp(netip.AddrPortFrom(me, 40000), gwUDP.addr(), []byte("control")))
	if !gwUDP.await("control", 5*time.Second) {
		t.Fatal("a hand-made datagram to the gateway did not arrive")
	}
	gwTCPAddr := gwTCP.Addr().(*net.TCPAddr).AddrPort()
	send(tcpSYN(netip.AddrPortFrom(me, 40001), gwTCPAddr))
	if raw.await(5*time.Second, func(f []byte) bool { return isSYNACK(f, gwTCPAddr) }) == nil {
		t.Fatal("a hand-made SYN to the gateway got no SYN-ACK")
	}

	send(udp(netip.AddrPortFrom(me, 40002), loUDP.addr(), []byte("to-loopback")))
	if loUDP.await("to-loopback", silence) {
		t.Error("a sandbox's datagram reached a host socket bound to 127.0.0.1")
	}
	loTCPAddr := loTCP.Addr().(*net.TCPAddr).AddrPort()
	send(tcpSYN(netip.AddrPortFrom(me, 40003), loTCPAddr))
	if raw.await(silence, func(f []byte) bool { return isSYNACK(f, loTCPAddr) }) != nil {
		t.Error("a sandbox's SYN to the host's 127.0.0.1 was answered")
	}

	// Published ports still work: from the host's loopback, from the
	// host's address, from another sandbox and from the sandbox itself.
	check := func(what string, dial func() (net.Conn, error)) {
		t.Helper()
		if got, err := roundTrip(dial, "hi"); err != nil || got != "web:hi" {
			t.Errorf("%s: %q, %v", what, got, err)
		}
	}
	check("host to 127.0.0.1", dialHost("tcp4", addrPort(netip.MustParseAddr("127.0.0.1"), int(pubAtt.Ports[0].HostPort))))
	published := addrPort(gw, int(pubAtt.Ports[1].HostPort))
	check("host to its bridge address", dialHost("tcp4", published))
	check("another sandbox", attacker.dialer("tcp4", published))
	check("the sandbox itself (hairpin)", pub.dialer("tcp4", published))

	for _, id := range []string{"lo-attacker", "lo-pub"} {
		if err := def.Detach(ctx, id, ""); err != nil {
			t.Fatal(err)
		}
	}
}

// A sandbox, even with CAP_NET_RAW, cannot pose as its neighbour: frames
// with another source MAC, IPv4 packets with another source address and
// ARP claiming another address are dropped, so the host neither takes
// the neighbour's datagrams from it nor changes its neighbour entries;
// the sandboxes' own traffic goes on.
func TestNoSpoofing(t *testing.T) {
	n := testNetworks(t, "berth-t13", "10.215.13.0/24")
	ctx := t.Context()
	net1, err := n.Create(ctx, "spoof", &NetworkOptions{Subnet: netip.MustParsePrefix("10.215.113.0/24")})
	if err != nil {
		t.Fatal(err)
	}
	bridge := bridgeName("spoof")
	a, b := newNS(t), newNS(t)
	attA, err := net1.Attach(ctx, "spoof-a", a.path, &AttachOptions{Hostname: "a"})
	if err != nil {
		t.Fatal(err)
	}
	attB, err := net1.Attach(ctx, "spoof-b", b.path, &AttachOptions{Hostname: "b"})
	if err != nil {
		t.Fatal(err)
	}
	a.echoTCP(t, ":7", "a:")
	b.echoTCP(t, ":7", "b:")
	ipA, ipB, gw := attA.IPs[0].Addr(), attB.IPs[0].Addr(), attA.Gateway
	macB, err := b.mac(ifName)
	if err != nil {
		t.Fatal(err)
	}
	gwMAC, brIndex := bridgeMAC(t, bridge)
	inbox, err := newUDPInbox(addrPort(gw, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer inbox.Close()

	// What sandboxes do legitimately works, and gives the host a
	// neighbour entry for b.
	for _, c := range []struct {
		what, want string
		dial       func() (net.Conn, error)
	}{
		{"a to b", "b:x", a.dialer("tcp4", addrPort(ipB, 7))},
		{"b to a", "a:x", b.dialer("tcp4", addrPort(ipA, 7))},
		{"host to b", "b:x", dialHost("tcp4", addrPort(ipB, 7))},
		{"host to a", "a:x", dialHost("tcp4", addrPort(ipA, 7))},
	} {
		if got, err := roundTrip(c.dial, "x"); err != nil || got != c.want {
			t.Errorf("%s: %q, %v", c.what, got, err)
		}
	}
	if err := a.do(func() error {
		c, err := net.Dial("udp4", inbox.addr().String())
		if err == nil {
			_, err = c.Write([]byte("legit"))
			c.Close()
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if !inbox.await("legit", 5*time.Second) {
		t.Error("a sandbox's own datagram to the host did not arrive")
	}

	raw, err := a.rawPort(ifName)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	sendUDP := func(srcMAC net.HardwareAddr, src netip.Addr, msg string) {
		t.Helper()
		frame := ether(gwMAC, srcMAC, etherIPv4, udp(netip.AddrPortFrom(src, 40000), inbox.addr(), []byte(msg)))
		if err := raw.send(frame); err != nil {
			t.Fatal(err)
		}
	}
	sendUDP(raw.mac, ipA, "control")
	if !inbox.await("control", 5*time.Second) {
		t.Fatal("a hand-made datagram with the sandbox's own addresses did not arrive")
	}
	sendUDP(raw.mac, ipB, "neighbour's IP")
	sendUDP(macB, ipA, "neighbour's MAC")
	sendUDP(net.HardwareAddr{0x02, 0x42, 0x42, 0x42, 0x42, 0x42}, ipA, "made-up MAC")
	for _, msg := range []string{"neighbour's IP", "neighbour's MAC", "made-up MAC"} {
		if inbox.await(msg, silence) {
			t.Errorf("the host took a datagram with the %s", msg)
		}
	}

	// ARP claiming b's address, to the host: a reply, a request to the
	// gateway (which the host learns the sender from) and a gratuitous
	// one.
	zero := net.HardwareAddr{0, 0, 0, 0, 0, 0}
	for _, f := range [][]byte{
		ether(gwMAC, raw.mac, etherARP, arp(2, raw.mac, ipB, gwMAC, gw)),
		ether(broadcastMAC, raw.mac, etherARP, arp(1, raw.mac, ipB, zero, gw)),
		ether(broadcastMAC, raw.mac, etherARP, arp(1, raw.mac, ipB, zero, ipB)),
	} {
		if err := raw.send(f); err != nil {
			t.Fatal(err)
		}
	}
	// Frames from one port are handled in order: once this arrives, the
	// ARP packets have been.
	sendUDP(raw.mac, ipA, "after ARP")
	if !inbox.await("after ARP", 5*time.Second) {
		t.Fatal("a hand-made datagram after the ARP packets did not arrive")
	}
	if mac := neighbour(t, brIndex, ipB); !bytes.Equal(mac, macB) {
		t.Errorf("the host's neighbour entry for b (%s) is %s, want b's %s", ipB, mac, macB)
	}
	if got, err := roundTrip(dialHost("tcp4", addrPort(ipB, 7)), "x"); err != nil || got != "b:x" {
		t.Errorf("host to b after a's ARP: %q, %v", got, err)
	}

	// a changes its own MAC address: what it sends then is dropped.
	if err := a.do(func() error {
		l, err := netlink.LinkByName(ifName)
		if err != nil {
			return err
		}
		return netlink.LinkSetHardwareAddr(l, net.HardwareAddr{0x02, 0x42, 0x42, 0x42, 0x42, 0x43})
	}); err != nil {
		t.Fatal(err)
	}
	if err := a.do(func() error {
		c, err := net.Dial("udp4", inbox.addr().String())
		if err == nil {
			_, err = c.Write([]byte("new MAC"))
			c.Close()
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if inbox.await("new MAC", silence) {
		t.Error("the host took a datagram from a sandbox that changed its MAC address")
	}

	for _, id := range []string{"spoof-a", "spoof-b"} {
		if err := net1.Detach(ctx, id, ""); err != nil {
			t.Fatal(err)
		}
	}
}

// neighbour returns the MAC address of ip in the neighbour table of the
// interface, in the calling thread's namespace, or nil.
func neighbour(t *testing.T, index int, ip netip.Addr) net.HardwareAddr {
	t.Helper()
	neighs, err := netlink.NeighList(index, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, nb := range neighs {
		if a, ok := netip.AddrFromSlice(nb.IP); ok && a.Unmap() == ip {
			return nb.HardwareAddr
		}
	}
	return nil
}

// A pooled namespace gets its filter when it is attached, and loses it
// when the pool discards it.
func TestPoolFiltered(t *testing.T) {
	n := testNetworks(t, "berth-t14", "10.215.14.0/24")
	def := mustGet(t, n, DefaultNetwork)
	before := countFilters()
	p, err := NewPool(def, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	_, a, release, err := p.Acquire(t.Context(), "pooled")
	if err != nil {
		t.Fatal(err)
	}
	recs, err := n.records("")
	if err != nil {
		t.Fatal(err)
	}
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	ports, err := filteredPorts(c, tablesOf())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if len(r.IPs) > 0 && r.IPs[0] == a.IPs[0] && (r.Port == "" || !slices.Contains(ports, r.Port)) {
			t.Errorf("pooled namespace %s (port %q) has no filter; filtered ports %v", r.ID, r.Port, ports)
		}
	}
	release()
	p.Close()
	if err := n.Prune(t.Context()); err != nil {
		t.Fatal(err)
	}
	if after := countFilters(); after != before {
		t.Errorf("%d nftables objects of berth's after the pool closed, %d before", after, before)
	}
}

// What a port's filter costs: installing it at Attach and removing it at
// Detach, each timed alone.
func BenchmarkPortFilter(b *testing.B) {
	needRoot(b)
	ctx := b.Context()
	f := &portFilter{Port: "vethbench0", MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, IPs: []netip.Addr{netip.MustParseAddr("10.215.99.2")}}
	b.Cleanup(func() { pruneFilters() })
	install := func(b *testing.B) {
		if err := installPortFilter(ctx, f); err != nil {
			b.Fatal(err)
		}
	}
	remove := func(b *testing.B) {
		if err := removePortFilter(f.Port, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("install", func(b *testing.B) {
		for b.Loop() {
			install(b)
			b.StopTimer()
			remove(b)
			b.StartTimer()
		}
	})
	b.Run("remove", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			install(b)
			b.StartTimer()
			remove(b)
		}
	})
}

// Prune removes the filters of ports that are gone and keeps those of
// ports that exist, also when no port is gone at all. Run in a network
// namespace of its own: berth's tables there are the test's alone.
func TestPruneFiltersKeepsLivePorts(t *testing.T) {
	needRoot(t)
	errc := make(chan error, 1)
	osthread.Go(func() {
		errc <- func() error {
			if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
				return err
			}
			live, gone := "vethprlive0", "vethprgone0"
			if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: live}}); err != nil {
				return err
			}
			for i, port := range []string{live, gone} {
				f := &portFilter{Port: port, MAC: net.HardwareAddr{2, 0, 0, 0, 0, byte(i + 1)}, IPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 215, 98, byte(i + 2)})}}
				if err := installPortFilter(t.Context(), f); err != nil {
					return err
				}
			}
			want := []string{live}
			for i := range 2 { // the second time, nothing is gone
				if err := pruneFilters(); err != nil {
					return fmt.Errorf("prune %d: %w", i, err)
				}
				c, err := nftables.New()
				if err != nil {
					return err
				}
				set, err := c.GetSetByName(tablesOf().bridge, portsMap)
				if err != nil {
					return fmt.Errorf("prune %d: %w", i, err)
				}
				elems, err := c.GetSetElements(set)
				if err != nil {
					return err
				}
				var got []string
				for _, e := range elems {
					got = append(got, string(bytes.TrimRight(e.Key, "\x00")))
				}
				ports, err := filteredPorts(c, tablesOf())
				if err != nil {
					return err
				}
				if !slices.Equal(got, want) || !slices.Equal(ports, want) {
					return fmt.Errorf("prune %d: map holds %v, filtered ports %v; want %v", i, got, ports, want)
				}
			}
			return nil
		}()
	})
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}
