// netattack sends hand-made frames on eth0 from inside a sandbox, as a
// hostile workload with CAP_NET_RAW would: the sandbox tests of berth's
// network filters run it. It is built statically (CGO_ENABLED=0).
//
//	netattack udp SRCMAC SRCIP DSTIP:PORT DSTMAC PAYLOAD
//	netattack arp OP SENDERIP TARGETIP DSTMAC
//
// "self" as SRCMAC or SRCIP means eth0's own; ARP's sender MAC is eth0's.
package main

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "netattack:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	ifi, err := net.InterfaceByName("eth0")
	if err != nil {
		return err
	}
	var frame []byte
	switch {
	case len(args) == 6 && args[0] == "udp":
		src := ifi.HardwareAddr
		if args[1] != "self" {
			if src, err = net.ParseMAC(args[1]); err != nil {
				return err
			}
		}
		ip, err := sourceIP(ifi, args[2])
		if err != nil {
			return err
		}
		dst, err := netip.ParseAddrPort(args[3])
		if err != nil {
			return err
		}
		dmac, err := net.ParseMAC(args[4])
		if err != nil {
			return err
		}
		frame = ether(dmac, src, 0x0800, udp(netip.AddrPortFrom(ip, 40000), dst, []byte(args[5])))
	case len(args) == 5 && args[0] == "arp":
		op, err := strconv.Atoi(args[1])
		if err != nil {
			return err
		}
		spa, err := netip.ParseAddr(args[2])
		if err != nil {
			return err
		}
		tpa, err := netip.ParseAddr(args[3])
		if err != nil {
			return err
		}
		dmac, err := net.ParseMAC(args[4])
		if err != nil {
			return err
		}
		a := make([]byte, 28)
		binary.BigEndian.PutUint16(a[0:2], 1)
		binary.BigEndian.PutUint16(a[2:4], 0x0800)
		a[4], a[5] = 6, 4
		binary.BigEndian.PutUint16(a[6:8], uint16(op))
		s, t := spa.As4(), tpa.As4()
		copy(a[8:14], ifi.HardwareAddr)
		copy(a[14:18], s[:])
		copy(a[24:28], t[:])
		frame = ether(dmac, ifi.HardwareAddr, 0x0806, a)
	default:
		return fmt.Errorf("usage: udp SRCMAC SRCIP DSTIP:PORT DSTMAC PAYLOAD | arp OP SENDERIP TARGETIP DSTMAC")
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
	if err != nil {
		return fmt.Errorf("packet socket: %w", err)
	}
	defer unix.Close(fd)
	return unix.Sendto(fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6})
}

func sourceIP(ifi *net.Interface, s string) (netip.Addr, error) {
	if s != "self" {
		return netip.ParseAddr(s)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}, err
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
			ip, _ := netip.AddrFromSlice(n.IP.To4())
			return ip, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("eth0 has no IPv4 address")
}

func ether(dst, src net.HardwareAddr, etype uint16, payload []byte) []byte {
	f := make([]byte, 14, 14+len(payload))
	copy(f[0:6], dst)
	copy(f[6:12], src)
	binary.BigEndian.PutUint16(f[12:14], etype)
	return append(f, payload...)
}

func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// udp returns an IPv4 packet holding a UDP datagram without a checksum,
// which IPv4 allows.
func udp(src, dst netip.AddrPort, payload []byte) []byte {
	p := make([]byte, 28, 28+len(payload))
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:4], uint16(28+len(payload)))
	p[8], p[9] = 64, unix.IPPROTO_UDP
	s, d := src.Addr().As4(), dst.Addr().As4()
	copy(p[12:16], s[:])
	copy(p[16:20], d[:])
	binary.BigEndian.PutUint16(p[10:12], checksum(p[:20]))
	binary.BigEndian.PutUint16(p[20:22], src.Port())
	binary.BigEndian.PutUint16(p[22:24], dst.Port())
	binary.BigEndian.PutUint16(p[24:26], uint16(8+len(payload)))
	return append(p, payload...)
}
