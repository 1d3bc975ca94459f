package netplug

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Hand-made frames, as a sandbox with CAP_NET_RAW can send them, for the
// tests of berth's packet filters.

const (
	etherIPv4 = 0x0800
	etherARP  = 0x0806
)

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// A rawPort sends and receives whole Ethernet frames on an interface of a
// test namespace (an AF_PACKET socket made in it).
type rawPort struct {
	fd      int
	ifindex int
	mac     net.HardwareAddr
}

// rawPort opens an AF_PACKET socket on ifname in the namespace.
func (ns *testNS) rawPort(ifname string) (*rawPort, error) {
	p := &rawPort{fd: -1}
	err := ns.do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		p.ifindex, p.mac = ifi.Index, ifi.HardwareAddr
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: p.ifindex}); err != nil {
			unix.Close(fd)
			return err
		}
		p.fd = fd
		return nil
	})
	return p, err
}

func (p *rawPort) Close() error { return unix.Close(p.fd) }

func (p *rawPort) send(frame []byte) error {
	return unix.Sendto(p.fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: p.ifindex, Halen: 6})
}

// await returns the first frame received within d for which match is
// true, or nil.
func (p *rawPort) await(d time.Duration, match func([]byte) bool) []byte {
	deadline := time.Now().Add(d)
	buf := make([]byte, 2048)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return nil
		}
		tv := unix.NsecToTimeval(left.Nanoseconds())
		unix.SetsockoptTimeval(p.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		n, _, err := unix.Recvfrom(p.fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil
		}
		if match(buf[:n]) {
			return append([]byte(nil), buf[:n]...)
		}
	}
}

func ether(dst, src net.HardwareAddr, etype uint16, payload []byte) []byte {
	f := make([]byte, 14, 14+len(payload))
	copy(f[0:6], dst)
	copy(f[6:12], src)
	binary.BigEndian.PutUint16(f[12:14], etype)
	return append(f, payload...)
}

func checksum(parts ...[]byte) uint16 {
	var sum uint32
	for _, b := range parts {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(b[i])<<8 | uint32(b[i+1])
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

func ipv4(src, dst netip.Addr, proto byte, payload []byte) []byte {
	h := make([]byte, 20, 20+len(payload))
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:4], uint16(20+len(payload)))
	binary.BigEndian.PutUint16(h[4:6], 0x4242)
	h[8] = 64
	h[9] = proto
	s, d := src.As4(), dst.As4()
	copy(h[12:16], s[:])
	copy(h[16:20], d[:])
	binary.BigEndian.PutUint16(h[10:12], checksum(h))
	return append(h, payload...)
}

func pseudoHeader(src, dst netip.Addr, proto byte, length int) []byte {
	s, d := src.As4(), dst.As4()
	ph := append(s[:], d[:]...)
	return append(ph, 0, proto, byte(length>>8), byte(length))
}

// udp returns an IPv4 UDP packet.
func udp(src, dst netip.AddrPort, payload []byte) []byte {
	u := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(u[0:2], src.Port())
	binary.BigEndian.PutUint16(u[2:4], dst.Port())
	binary.BigEndian.PutUint16(u[4:6], uint16(8+len(payload)))
	u = append(u, payload...)
	binary.BigEndian.PutUint16(u[6:8], checksum(pseudoHeader(src.Addr(), dst.Addr(), unix.IPPROTO_UDP, len(u)), u))
	return ipv4(src.Addr(), dst.Addr(), unix.IPPROTO_UDP, u)
}

// tcpSYN returns an IPv4 TCP SYN.
func tcpSYN(src, dst netip.AddrPort) []byte {
	t := make([]byte, 20)
	binary.BigEndian.PutUint16(t[0:2], src.Port())
	binary.BigEndian.PutUint16(t[2:4], dst.Port())
	binary.BigEndian.PutUint32(t[4:8], 0x12345678)
	t[12] = 5 << 4
	t[13] = 0x02 // SYN
	binary.BigEndian.PutUint16(t[14:16], 64240)
	binary.BigEndian.PutUint16(t[16:18], checksum(pseudoHeader(src.Addr(), dst.Addr(), unix.IPPROTO_TCP, len(t)), t))
	return ipv4(src.Addr(), dst.Addr(), unix.IPPROTO_TCP, t)
}

// isSYNACK reports whether frame is an IPv4 TCP SYN-ACK from src.
func isSYNACK(frame []byte, src netip.AddrPort) bool {
	if len(frame) < 14+40 || binary.BigEndian.Uint16(frame[12:14]) != etherIPv4 {
		return false
	}
	ip := frame[14:]
	hl := int(ip[0]&0x0f) * 4
	if ip[9] != unix.IPPROTO_TCP || len(ip) < hl+20 {
		return false
	}
	from, _ := netip.AddrFromSlice(ip[12:16])
	t := ip[hl:]
	return from == src.Addr() && binary.BigEndian.Uint16(t[0:2]) == src.Port() && t[13]&0x12 == 0x12
}

// arp returns an Ethernet/IPv4 ARP packet.
func arp(op uint16, sha net.HardwareAddr, spa netip.Addr, tha net.HardwareAddr, tpa netip.Addr) []byte {
	a := make([]byte, 28)
	binary.BigEndian.PutUint16(a[0:2], 1) // Ethernet
	binary.BigEndian.PutUint16(a[2:4], etherIPv4)
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:8], op)
	s, t := spa.As4(), tpa.As4()
	copy(a[8:14], sha)
	copy(a[14:18], s[:])
	copy(a[18:24], tha)
	copy(a[24:28], t[:])
	return a
}

var broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// udpInbox collects the payloads of the datagrams a host socket gets.
type udpInbox struct {
	conn *net.UDPConn
	mu   sync.Mutex
	got  map[string]bool
}

func newUDPInbox(addr string) (*udpInbox, error) {
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		return nil, err
	}
	in := &udpInbox{conn: c, got: map[string]bool{}}
	go func() {
		buf := make([]byte, 1500)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			in.mu.Lock()
			in.got[string(buf[:n])] = true
			in.mu.Unlock()
		}
	}()
	return in, nil
}

func (in *udpInbox) addr() netip.AddrPort { return in.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

func (in *udpInbox) Close() error { return in.conn.Close() }

// await reports whether a datagram with payload want has arrived, or
// arrives within d.
func (in *udpInbox) await(want string, d time.Duration) bool {
	for deadline := time.Now().Add(d); ; time.Sleep(10 * time.Millisecond) {
		in.mu.Lock()
		ok := in.got[want]
		in.mu.Unlock()
		if ok || time.Now().After(deadline) {
			return ok
		}
	}
}
