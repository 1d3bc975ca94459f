package netplug

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 || pluginDir == "" {
		t.Skip("needs root: makes network namespaces, bridges and iptables rules")
	}
}

// liveNamespaces counts the test's namespace processes still running.
var liveNamespaces atomic.Int64

// A testNS is a network namespace standing in for a sandbox's: that of a
// sleeping busybox, with lo up.
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
	liveNamespaces.Add(1)
	ns := &testNS{cmd: cmd, path: fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid)}
	t.Cleanup(ns.kill)
	if err := ns.linkUp("lo"); err != nil {
		t.Fatalf("lo up: %v", err)
	}
	return ns
}

// kill ends the namespace's process, and so the namespace.
func (ns *testNS) kill() {
	ns.once.Do(func() {
		ns.cmd.Process.Kill()
		ns.cmd.Wait()
		liveNamespaces.Add(-1)
	})
}

func (ns *testNS) handle() (*netlink.Handle, error) {
	h, err := netns.GetFromPath(ns.path)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	return netlink.NewHandleAt(h)
}

func (ns *testNS) linkUp(name string) error {
	h, err := ns.handle()
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(name)
	if err != nil {
		return err
	}
	return h.LinkSetUp(l)
}

// links returns the names of the interfaces in the namespace.
func (ns *testNS) links() ([]string, error) {
	h, err := ns.handle()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	ls, err := retryDump(h.LinkList)
	var names []string
	for _, l := range ls {
		names = append(names, l.Attrs().Name)
	}
	sort.Strings(names)
	return names, err
}

// addrs returns the IPv4 addresses of the interface in the namespace.
func (ns *testNS) addrs(ifname string) ([]netip.Prefix, error) {
	h, err := ns.handle()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	l, err := h.LinkByName(ifname)
	if err != nil {
		return nil, err
	}
	as, err := h.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, a := range as {
		ip, _ := netip.AddrFromSlice(a.IPNet.IP)
		ones, _ := a.IPNet.Mask.Size()
		out = append(out, netip.PrefixFrom(ip.Unmap(), ones))
	}
	return out, nil
}

// do runs fn on a thread in the namespace. Sockets made there stay in it.
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
		// The thread stays locked, and dies with the goroutine.
		return fmt.Errorf("back to the host's namespace: %w", err)
	}
	runtime.UnlockOSThread()
	return ferr
}

// echoTCP serves TCP echo on addr in the namespace until the test ends or
// the listener returned is closed. Each connection gets back the line it
// sent, prefixed with tag. The listening socket keeps the namespace alive.
func (ns *testNS) echoTCP(t testing.TB, addr, tag string) net.Listener {
	t.Helper()
	var l net.Listener
	if err := ns.do(func() (err error) { l, err = net.Listen("tcp4", addr); return }); err != nil {
		t.Fatalf("listen in namespace: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				line, err := bufio.NewReader(c).ReadString('\n')
				if err == nil {
					io.WriteString(c, tag+line)
				}
			}()
		}
	}()
	return l
}

// echoUDP serves UDP echo on addr in the namespace until the test ends.
func (ns *testNS) echoUDP(t testing.TB, addr, tag string) {
	t.Helper()
	var c net.PacketConn
	if err := ns.do(func() (err error) { c, err = net.ListenPacket("udp4", addr); return }); err != nil {
		t.Fatalf("listen in namespace: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			c.WriteTo(append([]byte(tag), buf[:n]...), from)
		}
	}()
}

// roundTrip sends a line over TCP to addr and returns the answer; dial
// makes the connection (from the host, or from a namespace).
func roundTrip(dial func() (net.Conn, error), msg string) (string, error) {
	c, err := dial()
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, msg+"\n"); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSuffix(line, "\n"), err
}

func dialHost(network, addr string) func() (net.Conn, error) {
	return func() (net.Conn, error) { return net.DialTimeout(network, addr, 3*time.Second) }
}

func (ns *testNS) dialer(network, addr string) func() (net.Conn, error) {
	return func() (c net.Conn, err error) {
		err = ns.do(func() error {
			c, err = net.DialTimeout(network, addr, 3*time.Second)
			return err
		})
		return c, err
	}
}

func udpRoundTrip(addr, msg string) (string, error) {
	c, err := net.Dial("udp4", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	buf := make([]byte, 1500)
	// UDP may lose the first datagram while ARP resolves; try a few.
	for range 5 {
		c.SetDeadline(time.Now().Add(time.Second))
		if _, err := c.Write([]byte(msg)); err != nil {
			return "", err
		}
		n, err := c.Read(buf)
		if err == nil {
			return string(buf[:n]), nil
		}
	}
	return "", errors.New("no UDP answer")
}

// testNetworks opens Networks in a temporary directory, with a default
// network on its own bridge and subnet so as not to disturb a real one.
func testNetworks(t testing.TB, bridge, subnet string) *Networks {
	t.Helper()
	needRoot(t)
	dir := t.TempDir()
	resolv := filepath.Join(dir, "resolv.conf")
	os.WriteFile(resolv, []byte("nameserver 127.0.0.53\nnameserver 192.0.2.53\nsearch example.test\noptions ndots:2\n"), 0o644)
	opts := &Options{
		PluginDir:  pluginDir,
		ConfigDir:  filepath.Join(dir, "config"),
		RunDir:     filepath.Join(dir, "run"),
		ResolvConf: resolv,
		Default:    NetworkOptions{Bridge: bridge, Subnet: netip.MustParsePrefix(subnet)},
		Logger:     slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	n, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	// Whatever the test did, nothing may be left. Dead namespaces'
	// interfaces go asynchronously, and Prune leaves a bridge with any
	// plugged in, so wait for them first.
	veths := snapshot().Veths
	t.Cleanup(func() {
		waitVeths(veths)
		if err := n.Prune(context.Background()); err != nil {
			t.Errorf("prune: %v", err)
		}
		if recs, err := n.records(""); err != nil || len(recs) > 0 {
			t.Errorf("attachment records left: %d (%v)", len(recs), err)
		}
	})
	return n
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func mustGet(t testing.TB, n *Networks, name string) Network {
	t.Helper()
	net, err := n.Get(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return net
}

// counts are what an attachment can leave on the host.
type counts struct {
	Veths, Bridges, Rules, Filters, Namespaces int
}

// snapshot counts what is on the host now: veths, berth's bridges,
// iptables rules of CNI's and berth's, and the test's namespaces. A
// listing that fails panics (see mustList): the leak checks compare
// snapshots, and an error must not read as "nothing there".
func snapshot() counts {
	var c counts
	links := mustList(retryDump(netlink.LinkList))
	for _, l := range links {
		switch {
		case l.Type() == "veth":
			c.Veths++
		case l.Type() == "bridge" && strings.HasPrefix(l.Attrs().Name, "berth"):
			c.Bridges++
		}
	}
	c.Rules = countRules()
	c.Filters = countFilters()
	c.Namespaces = int(liveNamespaces.Load())
	return c
}

// waitSnapshot waits a little for the kernel to finish tearing down dead
// namespaces' veths, which it does asynchronously, and returns what is
// left.
func waitSnapshot(want counts) counts {
	var c counts
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if c = snapshot(); c == want || time.Now().After(deadline) {
			return c
		}
	}
}

// waitVeths waits a little for the number of veths to be want, and
// returns what is on the host then.
func waitVeths(want int) counts {
	var c counts
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if c = snapshot(); c.Veths == want || time.Now().After(deadline) {
			return c
		}
	}
}

// countRules counts iptables (and nft, if installed) rules and chains
// that mention CNI or berth.
func countRules() int {
	total := 0
	for _, cmd := range [][]string{{"iptables-save"}, {"ip6tables-save"}, {"nft", "list", "ruleset"}} {
		if _, err := exec.LookPath(cmd[0]); err != nil {
			continue
		}
		out := mustOutput(cmd[0], cmd[1:]...)
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, "CNI-") || strings.Contains(strings.ToLower(l), "berth") || strings.Contains(l, "cni_") {
				total++
			}
		}
	}
	return total
}

// countFilters counts berth's nftables tables and what is in them:
// chains, rules, maps and the maps' elements.
func countFilters() int {
	out := mustOutput("nft", "-j", "list", "ruleset")
	var list struct {
		Nftables []map[string]struct {
			Name  string            `json:"name"`
			Table string            `json:"table"`
			Elem  []json.RawMessage `json:"elem"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(out, &list); err != nil {
		panic(fmt.Sprintf("netplug tests: cannot read nft's ruleset: %v", err))
	}
	total := 0
	for _, o := range list.Nftables {
		for kind, v := range o {
			switch {
			case kind == "table":
				if v.Name == filterTable {
					total++
				}
			case v.Table != filterTable:
			case kind == "map" || kind == "set":
				total += 1 + len(v.Elem)
			default:
				total++
			}
		}
	}
	return total
}

// rulesMentioning returns the iptables rules that contain any of strs.
func rulesMentioning(strs ...string) []string {
	var found []string
	for _, cmd := range []string{"iptables-save", "ip6tables-save"} {
		out := mustOutput(cmd)
		for _, l := range strings.Split(string(out), "\n") {
			for _, s := range strs {
				if strings.Contains(l, s) {
					found = append(found, l)
					break
				}
			}
		}
	}
	return found
}

// stateFiles counts n's IPAM leases, attachment records and CNI cache
// entries.
func stateFiles(n *Networks) (leases, records, cache int) {
	ipam, _ := filepath.Glob(filepath.Join(n.opts.RunDir, "ipam", "*", "*"))
	for _, p := range ipam {
		if _, err := netip.ParseAddr(filepath.Base(p)); err == nil {
			leases++
		}
	}
	recs, _ := filepath.Glob(filepath.Join(n.opts.RunDir, "attachments", "*", "*"))
	cached, _ := filepath.Glob(filepath.Join(n.opts.RunDir, "cache", "results", "*"))
	return leases, len(recs), len(cached)
}

// mustList returns what a listing of the host's state returned, and
// panics if it failed: a helper that counts what a test left behind must
// not read an error as "nothing", and some of its callers (TestMain) have
// no test to fail.
func mustList[T any](v []T, err error) []T {
	if err != nil {
		panic(fmt.Sprintf("netplug tests: cannot list the host's state: %v", err))
	}
	return v
}

// mustOutput returns the output of a command that lists the host's
// state, and panics if it fails (see mustList).
func mustOutput(name string, args ...string) []byte {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, ee.Stderr)
		}
		panic(fmt.Sprintf("netplug tests: %s %s: %v", name, strings.Join(args, " "), err))
	}
	return out
}

func retryDump[T any](f func() ([]T, error)) ([]T, error) {
	for i := 0; ; i++ {
		v, err := f()
		if !errors.Is(err, netlink.ErrDumpInterrupted) || i == 10 {
			return v, err
		}
	}
}

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[int(float64(len(s)-1)*p)]
}
