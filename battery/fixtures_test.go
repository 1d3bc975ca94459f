package battery

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/netplug"
	"github.com/berth-dev/berth/sandbox"
)

// fixtures are host objects made once, on first use, and undone when the
// battery ends.
var fixtures undoList

// undoList undoes what was added to it, newest first.
type undoList struct {
	mu  sync.Mutex
	fns []func()
}

func addUndo(fn func()) {
	fixtures.mu.Lock()
	defer fixtures.mu.Unlock()
	fixtures.fns = append(fixtures.fns, fn)
}

func (u *undoList) release() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for i := len(u.fns) - 1; i >= 0; i-- {
		u.fns[i]()
	}
	u.fns = nil
}

// loopDevice is a loop device the battery attaches to a small file of its
// own: the host's disk, as far as the device cases are concerned.
type loopDevice struct {
	path    string
	minor   uint32
	backing string
	content []byte
}

var theLoop = sync.OnceValues(func() (*loopDevice, error) {
	l := &loopDevice{backing: filepath.Join(env.dir, "loop-backing"), content: make([]byte, 1<<20)}
	rand.Read(l.content)
	if err := os.WriteFile(l.backing, l.content, 0o600); err != nil {
		return nil, err
	}
	out, err := exec.Command("losetup", "--find", "--show", l.backing).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("losetup: %w: %s", err, out)
	}
	l.path = strings.TrimSpace(string(out))
	addUndo(func() { exec.Command("losetup", "--detach", l.path).Run() })
	var st unix.Stat_t
	if err := unix.Stat(l.path, &st); err != nil {
		return nil, err
	}
	if unix.Major(st.Rdev) != 7 {
		return nil, fmt.Errorf("%s is %d:%d, not a loop device", l.path, unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	l.minor = unix.Minor(st.Rdev)
	return l, nil
})

// loop returns the battery's loop device, skipping the case where the
// host cannot make one (no loop driver, as in some containers).
func loop(t *testing.T) *loopDevice {
	t.Helper()
	l, err := theLoop()
	if err != nil {
		t.Skipf("no loop device to attack: %v", err)
	}
	return l
}

// holds says whether the backing file holds marker, which a sandbox
// tried to write through the device: "" when it does not. Looking for the
// attempt's own marker keeps one case's leak out of another's verdict.
func (l *loopDevice) holds(marker string) string {
	// What was written through the device may still be in its cache.
	if f, err := os.Open(l.path); err == nil {
		unix.Fsync(int(f.Fd()))
		f.Close()
	}
	got, err := os.ReadFile(l.backing)
	if err != nil {
		return "cannot read the loop device's backing file: " + err.Error()
	}
	if bytes.Contains(got, []byte(marker)) {
		return fmt.Sprintf("the loop device's backing file %s now holds what the sandbox wrote (%s)", l.backing, marker)
	}
	return ""
}

// miscMinor is the minor number of the misc device name, from /proc/misc.
func miscMinor(name string) (uint32, bool) {
	b, err := os.ReadFile("/proc/misc")
	if err != nil {
		return 0, false
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) == 2 && f[1] == name {
			n, err := strconv.ParseUint(f[0], 10, 32)
			return uint32(n), err == nil
		}
	}
	return 0, false
}

// hostDisk is the host's first whole disk (SCSI/SATA 8:x, device mapper
// 253:x, NVMe 259:x, virtio and others), from /proc/partitions.
func hostDisk() (name string, major, minor uint32, ok bool) {
	f, err := os.Open("/proc/partitions")
	if err != nil {
		return "", 0, 0, false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fl := strings.Fields(s.Text())
		if len(fl) != 4 {
			continue
		}
		maj, err1 := strconv.ParseUint(fl[0], 10, 32)
		min, err2 := strconv.ParseUint(fl[1], 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		n := fl[3]
		if maj == 7 || maj == 1 || strings.HasPrefix(n, "loop") || strings.HasPrefix(n, "ram") || strings.HasPrefix(n, "zram") || strings.HasPrefix(n, "nbd") || strings.HasPrefix(n, "sr") {
			continue
		}
		if !fileExists("/sys/block/" + n) {
			continue // a partition
		}
		return n, uint32(maj), uint32(min), true
	}
	return "", 0, 0, false
}

// kmsgHas reports whether the host's kernel log holds marker.
func kmsgHas(marker string) (bool, error) {
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, err
	}
	defer unix.Close(fd)
	buf := make([]byte, 8192)
	for {
		n, err := unix.Read(fd, buf)
		switch {
		case errors.Is(err, unix.EPIPE):
			continue // overwritten while read
		case errors.Is(err, unix.EAGAIN):
			return false, nil
		case err != nil:
			return false, err
		}
		if bytes.Contains(buf[:n], []byte(marker)) {
			return true, nil
		}
	}
}

// searchableTempDir is a t.TempDir that root of a user namespace (an
// ordinary id on the host) can reach.
func searchableTempDir(t *testing.T) string {
	dir := t.TempDir()
	for d := dir; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// volumeDir is a host directory for a volume that any sandbox may write,
// as a directory handed to a sandbox's user is.
func volumeDir(t *testing.T) string {
	dir := filepath.Join(searchableTempDir(t), "vol")
	if err := os.Mkdir(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	return dir
}

// bridge is the battery's bridge network, with a sandbox on it that
// publishes a port on the host's 127.0.0.1: what makes CNI's portmap turn
// on route_localnet for the bridge.
type bridge struct {
	network sandbox.Network
	name    string
	index   int
	mac     net.HardwareAddr
	gateway netip.Addr
}

var theBridge = sync.OnceValues(func() (*bridge, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const name = "battery"
	n, err := env.nets.Create(ctx, name, &netplug.NetworkOptions{Bridge: "berthbat", Subnet: netip.MustParsePrefix("10.216.77.0/24")})
	if err != nil {
		return nil, err
	}
	addUndo(func() { env.nets.Remove(context.Background(), name) })
	o := options()
	o.Network = n
	o.Ports = []netplug.PortMapping{{HostIP: "127.0.0.1", ContainerPort: 80, Protocol: "tcp"}}
	o.Args = []string{"sleep", "600"}
	publisher := sandbox.New(image, o)
	if err := publisher.Start(ctx); err != nil {
		return nil, fmt.Errorf("the sandbox publishing a port: %w", err)
	}
	addUndo(func() { publisher.Close() })
	b := &bridge{network: n, name: "berthbat", gateway: publisher.Attachment().Gateway}
	l, err := netlink.LinkByName(b.name)
	if err != nil {
		return nil, err
	}
	b.index, b.mac = l.Attrs().Index, l.Attrs().HardwareAddr
	return b, nil
})

func theNetwork(t *testing.T) *bridge {
	t.Helper()
	b, err := theBridge()
	if err != nil {
		t.Fatalf("bridge network: %v", err)
	}
	return b
}

// A neighbour is a sandbox on the bridge that a case attacks.
type neighbour struct {
	ip   netip.Addr
	mac  net.HardwareAddr
	port int // the bridge port the host learnt its MAC on
}

// startNeighbour starts a sandbox on the bridge and makes the host learn
// its MAC (neighbour table) and port (the bridge's forwarding table).
func startNeighbour(t *testing.T, b *bridge) *neighbour {
	t.Helper()
	o := options()
	o.Network = b.network
	o.Args = []string{"sleep", "300"}
	sb := sandbox.New(image, o)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := sb.Start(ctx); err != nil {
		t.Fatalf("start the neighbour: %v", err)
	}
	t.Cleanup(func() { sb.Close() })
	nb := &neighbour{ip: sb.Attachment().IPs[0].Addr()}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("udp4", netip.AddrPortFrom(nb.ip, 9).String()); err == nil {
			c.Write([]byte("hello"))
			c.Close()
		}
		if mac, ok := hostNeighbourMAC(b, nb.ip); ok {
			nb.mac = mac
			if port, ok := fdbPort(b, mac); ok {
				nb.port = port
				return nb
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("the host never learnt the neighbour %s's MAC and port", nb.ip)
	return nil
}

// hostNeighbourMAC is the MAC the host's neighbour table has for ip.
func hostNeighbourMAC(b *bridge, ip netip.Addr) (net.HardwareAddr, bool) {
	ns, err := netlink.NeighList(b.index, netlink.FAMILY_V4)
	if err != nil {
		return nil, false
	}
	for _, n := range ns {
		if a, ok := netip.AddrFromSlice(n.IP); ok && a.Unmap() == ip && len(n.HardwareAddr) == 6 && n.State&(netlink.NUD_INCOMPLETE|netlink.NUD_FAILED) == 0 {
			return n.HardwareAddr, true
		}
	}
	return nil, false
}

// fdbPort is the index of the bridge port the bridge has learnt mac on.
func fdbPort(b *bridge, mac net.HardwareAddr) (int, bool) {
	ns, err := netlink.NeighList(0, unix.AF_BRIDGE)
	if err != nil {
		return 0, false
	}
	for _, n := range ns {
		if n.MasterIndex == b.index && bytes.Equal(n.HardwareAddr, mac) && n.LinkIndex != b.index {
			return n.LinkIndex, true
		}
	}
	return 0, false
}

// datagrams reads what a host listener got, waiting a little for what is
// still on its way, and returns the senders of those that hold marker.
// It stops at 5s even if datagrams keep coming: a steady sender must not
// hold the battery.
func datagrams(c *net.UDPConn, marker string) []netip.Addr {
	var from []netip.Addr
	buf := make([]byte, 2048)
	end := time.Now().Add(5 * time.Second)
	for {
		d := time.Now().Add(300 * time.Millisecond)
		if d.After(end) {
			d = end
		}
		c.SetReadDeadline(d)
		n, addr, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return from
		}
		if bytes.Contains(buf[:n], []byte(marker)) {
			from = append(from, addr.Addr().Unmap())
		}
	}
}

// mknod makes a block (typ 'b') or character device node on the host.
func mknod(path string, typ byte, major, minor uint32) error {
	mode := uint32(unix.S_IFCHR)
	if typ == 'b' {
		mode = unix.S_IFBLK
	}
	return unix.Mknod(path, mode|0o666, int(unix.Mkdev(major, minor)))
}
