package sandbox

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/netplug"
	"github.com/berth-dev/berth/security"
	"github.com/vishvananda/netlink"
)

// netattack builds testdata/netattack, a static program that sends
// hand-made frames from inside a sandbox, once.
var netattack = staticHelper("netattack")

// hostInbox collects the payloads of datagrams to a host socket.
type hostInbox struct {
	conn *net.UDPConn
	mu   sync.Mutex
	got  []string
}

func newHostInbox(t *testing.T, addr string) *hostInbox {
	t.Helper()
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	in := &hostInbox{conn: c}
	go func() {
		buf := make([]byte, 1500)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			in.mu.Lock()
			in.got = append(in.got, string(buf[:n]))
			in.mu.Unlock()
		}
	}()
	return in
}

func (in *hostInbox) addr() netip.AddrPort { return in.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

func (in *hostInbox) has(msg string) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return slices.Contains(in.got, msg)
}

// hostNeighbour returns the MAC address the host has for ip on the
// interface, or nil.
func hostNeighbour(t *testing.T, index int, ip netip.Addr) net.HardwareAddr {
	t.Helper()
	neighs, err := netlink.NeighList(index, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range neighs {
		if a, ok := netip.AddrFromSlice(n.IP); ok && a.Unmap() == ip && len(n.HardwareAddr) == 6 {
			return n.HardwareAddr
		}
	}
	return nil
}

// A sandbox that keeps CAP_NET_RAW, on a bridge where another sandbox
// publishes a port on the host's loopback (so that the bridge has
// route_localnet), sends hand-made frames: to the host's 127.0.0.1, with
// its neighbour's address, and ARP claiming its neighbour's address. The
// host gets none of them, and keeps its neighbour entry, while the same
// frames with the sandbox's own addresses arrive.
func TestNetworkAttacksFiltered(t *testing.T) {
	bin, err := netattack()
	if err != nil {
		t.Fatal(err)
	}
	start := func(o *Options) *Sandbox {
		t.Helper()
		sb := New("alpine:test", o)
		if err := sb.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sb.Close() })
		return sb
	}
	start(opts(func(o *Options) {
		o.Network = defaultNetwork(t)
		o.Ports = []netplug.PortMapping{{HostIP: "127.0.0.1", ContainerPort: 80}}
		o.Args = []string{"sleep", "600"}
	}))
	victim := start(opts(func(o *Options) {
		o.Network = defaultNetwork(t)
		o.Args = []string{"sleep", "600"}
	}))
	ipB, gw := victim.Attachment().IPs[0].Addr(), victim.Attachment().Gateway
	br, err := netlink.LinkByName("berth-sbtest")
	if err != nil {
		t.Fatal(err)
	}
	gwMAC, brIndex := br.Attrs().HardwareAddr, br.Attrs().Index
	if v, _ := os.ReadFile("/proc/sys/net/ipv4/conf/berth-sbtest/route_localnet"); strings.TrimSpace(string(v)) != "1" {
		t.Fatalf("route_localnet of berth-sbtest is %q, want 1 once a port is published on 127.0.0.1", v)
	}

	// The host learns the victim's MAC address.
	var macB net.HardwareAddr
	waitFor(t, func() bool {
		if c, err := net.Dial("udp4", netip.AddrPortFrom(ipB, 9).String()); err == nil {
			c.Write([]byte("hello"))
			c.Close()
		}
		time.Sleep(20 * time.Millisecond)
		macB = hostNeighbour(t, brIndex, ipB)
		return macB != nil
	})

	lo := newHostInbox(t, "127.0.0.1:0")
	host := newHostInbox(t, netip.AddrPortFrom(gw, 0).String())
	script := strings.Join([]string{
		fmt.Sprintf("/netattack udp self self %s %s control", host.addr(), gwMAC),
		fmt.Sprintf("/netattack udp self self %s %s loopback", lo.addr(), gwMAC),
		fmt.Sprintf("/netattack udp self %s %s %s neighbour-ip", ipB, host.addr(), gwMAC),
		fmt.Sprintf("/netattack udp %s self %s %s neighbour-mac", macB, host.addr(), gwMAC),
		fmt.Sprintf("/netattack arp 1 %s %s ff:ff:ff:ff:ff:ff", ipB, gw),
		fmt.Sprintf("/netattack arp 2 %s %s %s", ipB, gw, gwMAC),
		fmt.Sprintf("/netattack udp self self %s %s done", host.addr(), gwMAC),
	}, " && ")
	sec := security.Default()
	if !slices.Contains(sec.Capabilities, "CAP_NET_RAW") {
		sec.Capabilities = append(sec.Capabilities, "CAP_NET_RAW")
	}
	res, _, stderr := run(t, "alpine:test", opts(func(o *Options) {
		o.Network = defaultNetwork(t)
		o.Security = sec
		o.Mounts = []Mount{{Source: bin, Destination: "/netattack", ReadOnly: true}}
		o.Args = []string{"/bin/sh", "-c", script}
	}))
	if res.ExitCode != 0 {
		t.Fatalf("attacker exited %d: %s", res.ExitCode, stderr)
	}
	// Frames from one port are handled in order: once "done" is in,
	// everything before it has been handled.
	waitFor(t, func() bool { return host.has("done") })
	if !host.has("control") {
		t.Fatal("the attacker's datagram with its own addresses did not arrive: the test proves nothing")
	}
	if lo.has("loopback") {
		t.Error("a sandbox's datagram reached a host socket bound to 127.0.0.1")
	}
	for _, msg := range []string{"neighbour-ip", "neighbour-mac"} {
		if host.has(msg) {
			t.Errorf("the host took a datagram with the %s", strings.ReplaceAll(msg, "-", "'s "))
		}
	}
	if got := hostNeighbour(t, brIndex, ipB); !bytes.Equal(got, macB) {
		t.Errorf("the host's neighbour entry for the victim %s is %s, want %s", ipB, got, macB)
	}
}
