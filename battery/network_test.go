package battery

import (
	"bytes"
	"fmt"
	"net"
	"testing"
)

// networkCases attack the host and neighbours through the battery's bridge
// network, on which another sandbox publishes a port on 127.0.0.1. The
// forging ones also run with CAP_NET_RAW given back, so that the bridge's
// own protection is what is tested.
func networkCases() []hostile {
	also := []variant{defaultWithNetRaw}
	return []hostile{
		{
			name: "net-host-loopback", also: also,
			attacks: "sends hand-made packets to a service the host bound to 127.0.0.1 (CVE-2020-8558)",
			prepare: func(t *testing.T, a *attempt) {
				b := theNetwork(t)
				l, port := listenUDP(t, net.IPv4(127, 0, 0, 1))
				a.opts.Network = b.network
				a.attack("net-loopback", "gwmac", b.mac, "port", port, "marker", a.marker)
				a.check(func() string {
					if from := datagrams(l, a.marker); len(from) > 0 {
						return fmt.Sprintf("the host's 127.0.0.1 listener got the sandbox's datagram from %v", from)
					}
					return ""
				})
			},
			judge: packetJudgement,
		},
		{
			name: "net-ip-spoof", also: also,
			attacks: "sends the host datagrams with a neighbour sandbox's source address",
			prepare: func(t *testing.T, a *attempt) {
				b := theNetwork(t)
				victim := startNeighbour(t, b)
				l, port := listenUDP(t, b.gateway.AsSlice())
				a.opts.Network = b.network
				a.attack("net-spoof-ip", "gwmac", b.mac, "gw", b.gateway, "victim", victim.ip, "port", port, "marker", a.marker)
				a.check(func() string {
					for _, from := range datagrams(l, a.marker) {
						if from == victim.ip {
							return fmt.Sprintf("the host accepted a datagram claiming to come from the neighbour %s", victim.ip)
						}
					}
					return ""
				})
			},
			judge: packetJudgement,
		},
		{
			name: "net-arp-poison", also: also,
			attacks: "poisons the host's ARP entry for a neighbour sandbox",
			prepare: func(t *testing.T, a *attempt) {
				b := theNetwork(t)
				victim := startNeighbour(t, b)
				a.opts.Network = b.network
				a.attack("net-arp-poison", "gwmac", b.mac, "gw", b.gateway, "victim", victim.ip, "hold", 1)
				a.hold = true
				a.check(func() string {
					mac, ok := hostNeighbourMAC(b, victim.ip)
					if ok && !bytes.Equal(mac, victim.mac) {
						return fmt.Sprintf("the host's neighbour entry for %s now says %s, not the neighbour's %s", victim.ip, mac, victim.mac)
					}
					return ""
				})
			},
			judge: packetJudgement,
		},
		{
			name: "net-mac-forge", also: also,
			attacks: "sends frames from a neighbour's MAC, so that the bridge sends the neighbour's traffic to it",
			prepare: func(t *testing.T, a *attempt) {
				b := theNetwork(t)
				victim := startNeighbour(t, b)
				a.opts.Network = b.network
				a.attack("net-mac-forge", "victimmac", victim.mac, "hold", 1)
				a.hold = true
				a.check(func() string {
					if port, ok := fdbPort(b, victim.mac); ok && port != victim.port {
						return fmt.Sprintf("the bridge moved the neighbour's MAC %s from port %d to port %d", victim.mac, victim.port, port)
					}
					return ""
				})
			},
			judge: packetJudgement,
		},
		{
			name: "net-mac-change", errno: "EPERM",
			attacks: "changes its interface's MAC on the bridge",
			prepare: func(t *testing.T, a *attempt) {
				a.opts.Network = theNetwork(t).network
				a.attack("net-mac-change", "mac", "02:42:be:47:00:01")
			},
		},
		{
			name: "net-raw-socket", errno: "EPERM",
			attacks: "opens the raw and packet sockets forged traffic starts from (Default must not hold CAP_NET_RAW)",
			prepare: func(t *testing.T, a *attempt) {
				a.opts.Network = theNetwork(t).network
				a.attack("net-raw-socket")
			},
		},
		{
			name:    "ns-host-interfaces",
			attacks: "sees the host's network interfaces",
			prepare: func(t *testing.T, a *attempt) {
				a.attack("list-dir", "path", "/sys/class/net", "allowed", "lo")
			},
		},
	}
}

// packetJudgement accepts a refusal at any step, and also an attack that
// sent its packets: whether they reached anything is the host's check.
func packetJudgement(a *attempt) string {
	v := a.verdict
	switch {
	case v == nil:
		return fmt.Sprintf("the attacker gave no verdict (%s; stderr %q)", a.exit(), a.stderr.String())
	case !v.Attempted:
		return "the attack could not even be made: " + v.Detail
	}
	return ""
}

// listenUDP listens for the host side of a forged datagram on ip, until
// the test ends.
func listenUDP(t *testing.T, ip net.IP) (*net.UDPConn, int) {
	l, err := net.ListenUDP("udp4", &net.UDPAddr{IP: ip})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, l.LocalAddr().(*net.UDPAddr).Port
}
