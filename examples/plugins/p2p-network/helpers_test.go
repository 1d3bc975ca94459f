package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/plugin"
)

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: makes network namespaces and veth pairs")
	}
}

// testID is a sandbox id unique to this test and process, so that
// interface names do not clash with another run's.
func testID(t testing.TB, suffix string) string {
	name := strings.NewReplacer("/", "-", "#", "-").Replace(t.Name())
	return fmt.Sprintf("p2ptest-%d-%s-%s", os.Getpid(), name, suffix)
}

// newTestNetwork returns the plugin with a state directory of the test's
// own and subnet as its default.
func newTestNetwork(t testing.TB, subnet string) *p2pNetwork {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return newP2PNetwork(t.TempDir(), map[string]string{settingSubnet: subnet}, log)
}

// A testNS is a network namespace standing in for a sandbox's: that of a
// sleeping busybox.
type testNS struct {
	cmd  *exec.Cmd
	path string
	once sync.Once
}

func newNS(t testing.TB) *testNS {
	t.Helper()
	cmd := exec.Command("/bin/busybox", "sleep", "600")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start a namespace: %v", err)
	}
	ns := &testNS{cmd: cmd, path: fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid)}
	t.Cleanup(ns.kill)
	return ns
}

// kill ends the namespace's process, and so the namespace.
func (ns *testNS) kill() {
	ns.once.Do(func() {
		ns.cmd.Process.Kill()
		ns.cmd.Wait()
	})
}

// do runs fn on a thread in the namespace.
func (ns *testNS) do(fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	target, err := netns.GetFromPath(ns.path)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		return fmt.Errorf("back to the host's namespace: %w", err) // the thread stays locked and dies
	}
	runtime.UnlockOSThread()
	return ferr
}

func (ns *testNS) handle(t testing.TB) *netlink.Handle {
	t.Helper()
	h, err := netns.GetFromPath(ns.path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nh.Close)
	return nh
}

// attach attaches ns as id, as ServeNetwork would: through a path to a
// descriptor of the plugin's own.
func attach(t testing.TB, n *p2pNetwork, id string, ns *testNS, opts map[string]string) (*plugin.AttachResult, error) {
	t.Helper()
	f, err := os.Open(ns.path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	path := fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), f.Fd())
	return n.Attach(context.Background(), &plugin.AttachRequest{ID: id, NetnsPath: path, Options: opts})
}

func mustAttach(t testing.TB, n *p2pNetwork, id string, ns *testNS, opts map[string]string) *plugin.AttachResult {
	t.Helper()
	r, err := attach(t, n, id, ns, opts)
	if err != nil {
		t.Fatalf("attach %s: %v", id, err)
	}
	t.Cleanup(func() { n.Detach(context.Background(), id, "") })
	return r
}

// linkExists reports whether the host has an interface called name.
func linkExists(t testing.TB, name string) bool {
	t.Helper()
	_, err := netlink.LinkByName(name)
	if _, ok := err.(netlink.LinkNotFoundError); ok {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return true
}

// hostLinksWithPrefix names the host's interfaces beginning with prefix.
func hostLinksWithPrefix(t testing.TB, prefix string) []string {
	t.Helper()
	ls, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range ls {
		if strings.HasPrefix(l.Attrs().Name, prefix) {
			names = append(names, l.Attrs().Name)
		}
	}
	return names
}

func readSysctl(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/net/" + path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// udpListener listens on addr on the host and delivers what it reads.
func udpListener(t testing.TB, addr string) (port int, got <-chan string) {
	t.Helper()
	c, err := net.ListenPacket("udp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ch := make(chan string, 16)
	go func() {
		buf := make([]byte, 1500)
		for {
			n, _, err := c.ReadFrom(buf)
			if err != nil {
				close(ch)
				return
			}
			ch <- string(buf[:n])
		}
	}()
	return c.LocalAddr().(*net.UDPAddr).Port, ch
}

// sendForged sends, from the namespace's eth0, a hand-made IPv4/UDP
// frame to the host end's MAC address: what a sandbox with CAP_NET_RAW
// could send, bypassing its own routing and source checks.
func (ns *testNS) sendForged(t testing.TB, hostMAC net.HardwareAddr, src, dst netip.Addr, port int, payload string) {
	t.Helper()
	err := ns.do(func() error {
		eth0, err := net.InterfaceByName(sandboxIf)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		frame := udpFrame(eth0.HardwareAddr, hostMAC, src, dst, 40000, port, []byte(payload))
		sa := &unix.SockaddrLinklayer{Ifindex: eth0.Index, Protocol: htons(unix.ETH_P_IP), Halen: 6}
		copy(sa.Addr[:], hostMAC)
		return unix.Sendto(fd, frame, 0, sa)
	})
	if err != nil {
		t.Fatalf("send forged frame: %v", err)
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// udpFrame builds an Ethernet frame carrying an IPv4 UDP datagram (UDP
// checksum 0: none, which IPv4 allows).
func udpFrame(srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr, sport, dport int, payload []byte) []byte {
	b := make([]byte, 14+20+8+len(payload))
	copy(b[0:6], dstMAC)
	copy(b[6:12], srcMAC)
	binary.BigEndian.PutUint16(b[12:], unix.ETH_P_IP)
	ip := b[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+8+len(payload)))
	binary.BigEndian.PutUint16(ip[6:], 0x4000) // don't fragment
	ip[8] = 64
	ip[9] = unix.IPPROTO_UDP
	s4, d4 := src.As4(), dst.As4()
	copy(ip[12:16], s4[:])
	copy(ip[16:20], d4[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	udp := b[34:42]
	binary.BigEndian.PutUint16(udp[0:], uint16(sport))
	binary.BigEndian.PutUint16(udp[2:], uint16(dport))
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	copy(b[42:], payload)
	return b
}

// sendARPRequest sends, from the namespace's eth0, an ARP request for
// target that claims sender as the sender's address.
func (ns *testNS) sendARPRequest(t testing.TB, hostMAC net.HardwareAddr, sender, target netip.Addr) {
	t.Helper()
	err := ns.do(func() error {
		eth0, err := net.InterfaceByName(sandboxIf)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		b := make([]byte, 14+28)
		copy(b[0:6], hostMAC)
		copy(b[6:12], eth0.HardwareAddr)
		binary.BigEndian.PutUint16(b[12:], unix.ETH_P_ARP)
		a := b[14:]
		binary.BigEndian.PutUint16(a[0:], 1) // Ethernet
		binary.BigEndian.PutUint16(a[2:], unix.ETH_P_IP)
		a[4], a[5] = 6, 4
		binary.BigEndian.PutUint16(a[6:], 1) // request
		s4, t4 := sender.As4(), target.As4()
		copy(a[8:14], eth0.HardwareAddr)
		copy(a[14:18], s4[:])
		copy(a[24:28], t4[:])
		sa := &unix.SockaddrLinklayer{Ifindex: eth0.Index, Protocol: htons(unix.ETH_P_ARP), Halen: 6}
		copy(sa.Addr[:], hostMAC)
		return unix.Sendto(fd, b, 0, sa)
	})
	if err != nil {
		t.Fatalf("send ARP request: %v", err)
	}
}

// hostNeighbours lists the addresses the host has neighbour entries for
// on link.
func hostNeighbours(t testing.TB, link netlink.Link) []netip.Addr {
	t.Helper()
	ns, err := netlink.NeighList(link.Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var out []netip.Addr
	for _, n := range ns {
		if a, ok := netip.AddrFromSlice(n.IP); ok {
			out = append(out, a.Unmap())
		}
	}
	return out
}
