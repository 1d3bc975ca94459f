package plugintest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/netplug"
	"github.com/berth-dev/berth/plugin"
)

// NetworkOptions tune Network. The zero value (or nil) runs every check.
type NetworkOptions struct {
	// Settings are the plugin's own settings, sent with every Attach
	// (plugin.Options.Settings).
	Settings map[string]string
	// Env is added to the plugin's environment, as KEY=VALUE entries
	// (plugin.Options.Env): berth starts a plugin without arguments and
	// without its own environment, so this is how a test points the
	// plugin at directories of its own.
	Env []string
	// Host, if set, is the base of the options the kit opens the plugin
	// with. The kit adds Env, and fills in RunDir (a directory of its
	// own), Logger (the test's log) and Settings where they are empty.
	Host *plugin.Options
	// KeepLinks are host interfaces the plugin may make and leave behind,
	// shared by its sandboxes (a bridge), as filepath.Match patterns of
	// their names: "berth-kit", "br-*". The kit reports any other
	// interface, address or route the plugin leaves in the host's
	// namespace.
	KeepLinks []string
	// Concurrency is how many Attaches the Concurrent check makes at
	// once; 0 means 8.
	Concurrency int
	// Skip names checks to skip (the names of Network's subtests), each
	// with the reason the test log gives.
	Skip map[string]string
}

// Network checks that the network plugin at path keeps berth's network
// contract, each check a subtest of t, on network namespaces the kit
// makes for it:
//
//   - Info: it says it is a network plugin and speaks ProtocolVersion;
//   - RoundTrip: after Attach through plugin.OpenNetwork the namespace has
//     the interface the attachment names, up, with the addresses it
//     reports and a route through its gateway; the id is listed while
//     attached; after Detach the namespace holds nothing but lo;
//   - DetachTwice, UnknownID: detaching an id not attached fails with an
//     error that wraps plugin.ErrNotFound;
//   - InvalidID: ids that are not names are refused;
//   - ExistingID: attaching an id in use fails with plugin.ErrExists and
//     changes neither namespace;
//   - Concurrent: many Attaches and Detaches at once, for distinct ids
//     (and distinct addresses);
//   - Cancel: a cancelled or expired context fails the call with the
//     context's error and leaves nothing attached;
//   - Restart, KillMidAttach: after kill -9 of the plugin the next call
//     fails with ErrPluginExited or succeeds, what was attached before can
//     still be detached, and Attaches cut short can all be detached or are
//     unknown;
//   - DNS: the DNS settings given are the ones reported (capability
//     "dns");
//   - Ports: a port published on the host's loopback reaches a server in
//     the namespace, and no longer does after Detach (capability "ports");
//   - Close: the plugin's process is gone after Close.
//
// Every check ends by detaching what it attached and checking that
// nothing is left behind: interfaces other than lo in the kit's
// namespaces, interfaces (but those opts.KeepLinks allows), addresses and
// routes the check added in the host's namespace, ids of the kit's in the
// plugin's List, plugin processes after Close. Other programs changing the
// host's network at the same time can disturb that last audit.
//
// Network needs root, and skips the test without it.
func Network(t *testing.T, path string, opts *NetworkOptions) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("plugintest: the network kit makes network namespaces and must run as root")
	}
	k := newNetworkKit(t, path, opts)
	for _, c := range []struct {
		name string
		f    func(*testing.T)
	}{
		{"Info", k.testInfo},
		{"RoundTrip", k.testRoundTrip},
		{"DetachTwice", k.testDetachTwice},
		{"UnknownID", k.testUnknownID},
		{"InvalidID", k.testInvalidID},
		{"ExistingID", k.testExistingID},
		{"Concurrent", k.testConcurrent},
		{"Cancel", k.testCancel},
		{"Restart", k.testRestart},
		{"KillMidAttach", k.testKillMidAttach},
		{"DNS", k.testDNS},
		{"Ports", k.testPorts},
		{"Close", k.testClose},
	} {
		t.Run(c.name, func(t *testing.T) {
			if why, ok := k.opts.Skip[c.name]; ok {
				t.Skip(why)
			}
			c.f(t)
		})
	}
}

type networkKit struct {
	path   string
	opts   NetworkOptions
	runDir string
	nsDir  string // where the kit's namespaces are bound
	prefix string // of every id the kit makes, unique to this run
}

func newNetworkKit(t *testing.T, path string, opts *NetworkOptions) *networkKit {
	t.Helper()
	k := &networkKit{path: path, prefix: "kit-" + randomHex(4) + "-"}
	if opts != nil {
		k.opts = *opts
	}
	if k.opts.Concurrency <= 0 {
		k.opts.Concurrency = 8
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("plugintest: the plugin binary: %v", err)
	}
	tmp := t.TempDir()
	k.runDir, k.nsDir = filepath.Join(tmp, "run"), filepath.Join(tmp, "netns")
	for _, d := range []string{k.runDir, k.nsDir} {
		if err := os.Mkdir(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	if h := k.opts.Host; h != nil && h.RunDir != "" {
		k.runDir = h.RunDir
	}
	return k
}

func (k *networkKit) hostOptions(t *testing.T) *plugin.Options {
	var o plugin.Options
	if k.opts.Host != nil {
		o = *k.opts.Host
	}
	o.RunDir = k.runDir
	if o.Logger == nil {
		o.Logger = testLogger(t)
	}
	if o.Settings == nil {
		o.Settings = k.opts.Settings
	}
	o.Env = append(slices.Clone(o.Env), k.opts.Env...)
	return &o
}

func (k *networkKit) id(name string) string { return k.prefix + name }

// A networkSession is one opened plugin and the namespaces of one check.
type networkSession struct {
	k       *networkKit
	n       *plugin.Network
	others  []int
	before  *hostNet
	mu      sync.Mutex
	netnses []string
	// attached maps the ids attached and not detached yet to their
	// namespaces, detached when the check ends whatever happened.
	attached map[string]string
}

func (k *networkKit) open(t *testing.T) *networkSession {
	t.Helper()
	others, err := pluginProcs(k.path)
	if err != nil {
		t.Fatal(err)
	}
	before, err := readHostNet()
	if err != nil {
		t.Fatalf("plugintest: read the host's network: %v", err)
	}
	n, err := plugin.OpenNetwork(callCtx(t), k.path, k.hostOptions(t))
	if err != nil {
		t.Fatalf("OpenNetwork(%s): %v", k.path, err)
	}
	sess := &networkSession{k: k, n: n, others: others, before: before, attached: map[string]string{}}
	t.Cleanup(func() { sess.finish(t) })
	return sess
}

// netns makes a network namespace for the check.
func (sess *networkSession) netns(t *testing.T, name string) string {
	t.Helper()
	sess.mu.Lock()
	seq := len(sess.netnses)
	sess.mu.Unlock()
	p, err := newNetns(sess.k.nsDir, fmt.Sprintf("%s-%d", name, seq))
	if err != nil {
		t.Fatalf("plugintest: %v", err)
	}
	sess.mu.Lock()
	sess.netnses = append(sess.netnses, p)
	sess.mu.Unlock()
	return p
}

func (sess *networkSession) finish(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, id := range slices.Sorted(maps.Keys(sess.attached)) {
		if err := sess.n.Detach(ctx, id, sess.attached[id]); err != nil && !errors.Is(err, plugin.ErrNotFound) {
			t.Errorf("cleanup: Detach(%q): %v", id, err)
		}
	}
	if ids, err := sess.n.Attached(ctx); err != nil {
		t.Errorf("cleanup: List: %v", err)
	} else if left := ours(ids, sess.k.prefix); len(left) > 0 {
		t.Errorf("left behind: the plugin still lists %q after they were detached", left)
	}
	for _, p := range sess.netnses {
		if left, err := nsLinks(p); err != nil {
			t.Errorf("cleanup: %v", err)
		} else if len(left) > 0 {
			t.Errorf("left behind: interfaces %q in the namespace %s after Detach", left, filepath.Base(p))
		}
	}
	if now, err := readHostNet(); err != nil {
		t.Errorf("cleanup: %v", err)
	} else if left := sess.before.leftSince(now, sess.k.opts.KeepLinks); len(left) > 0 {
		t.Errorf("left behind in the host's network namespace (NetworkOptions.KeepLinks allows shared interfaces; other programs changing the host's network meanwhile show here too, which a rerun tells apart):\n%s", strings.Join(left, "\n"))
	}
	for _, p := range sess.netnses {
		if err := removeNetns(p); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	}
	pids := sessionPids(t, sess.k.path, sess.others)
	if err := sess.n.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if alive := waitGone(pids, 10*time.Second); len(alive) > 0 {
		t.Errorf("left behind: plugin processes %v still run 10s after Close", alive)
	}
	if left, err := dirEntries(sess.k.runDir); err != nil {
		t.Errorf("cleanup: %v", err)
	} else if len(left) > 0 {
		t.Errorf("left behind in berth's plugin run directory %s after Close: %q", sess.k.runDir, left)
	}
}

func ours(ids []string, prefix string) []string {
	var out []string
	for _, id := range ids {
		if strings.HasPrefix(id, prefix) {
			out = append(out, id)
		}
	}
	return out
}

func (sess *networkSession) attach(ctx context.Context, id, ns string, opts *netplug.AttachOptions) (*netplug.Attachment, error) {
	sess.mu.Lock()
	sess.attached[id] = ns
	sess.mu.Unlock()
	if opts == nil {
		opts = &netplug.AttachOptions{Hostname: id}
	}
	return sess.n.Attach(ctx, id, ns, opts)
}

func (sess *networkSession) detach(ctx context.Context, id string) error {
	sess.mu.Lock()
	ns := sess.attached[id]
	sess.mu.Unlock()
	err := sess.n.Detach(ctx, id, ns)
	if err == nil {
		sess.mu.Lock()
		delete(sess.attached, id)
		sess.mu.Unlock()
	}
	return err
}

// mustAttach attaches a new namespace as id and checks it.
func (sess *networkSession) mustAttach(t *testing.T, id string) (string, *netplug.Attachment) {
	t.Helper()
	ns := sess.netns(t, id)
	a, err := sess.attach(callCtx(t), id, ns, nil)
	if err != nil {
		t.Fatalf("Attach(%q): %v", id, err)
	}
	checkAttachment(t, id, ns, a)
	return ns, a
}

func checkAttachment(t *testing.T, id, ns string, a *netplug.Attachment) {
	t.Helper()
	if a == nil {
		t.Fatalf("Attach(%q) returned no attachment and no error", id)
	}
	if err := checkAttached(ns, a.Interface, a.IPs, a.Gateway); err != nil {
		t.Errorf("Attach(%q) reported %+v, but the namespace disagrees:\n%v", id, *a, err)
	}
}

// mustDetach detaches id and checks that its namespace is left with lo
// alone.
func (sess *networkSession) mustDetach(t *testing.T, id string) {
	t.Helper()
	sess.mu.Lock()
	ns := sess.attached[id]
	sess.mu.Unlock()
	if err := sess.detach(callCtx(t), id); err != nil {
		t.Fatalf("Detach(%q): %v", id, err)
	}
	if left, err := nsLinks(ns); err != nil {
		t.Errorf("after Detach(%q): %v", id, err)
	} else if len(left) > 0 {
		t.Errorf("after Detach(%q) its namespace still has %q", id, left)
	}
}

func (sess *networkSession) listed(t *testing.T, id string) bool {
	t.Helper()
	ids, err := sess.n.Attached(callCtx(t))
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	return slices.Contains(ids, id)
}

func (k *networkKit) testInfo(t *testing.T) {
	sess := k.open(t)
	info := sess.n.Info()
	t.Logf("plugin %q version %q, protocol %d, capabilities %q", info.Name, info.Version, info.Protocol, info.Capabilities)
	checkInfo(t, info, plugin.KindNetwork, []string{plugin.CapDNS, plugin.CapPorts})
	if len(info.Roots) > 0 {
		t.Errorf("Info: a network plugin names storage roots %q", info.Roots)
	}
}

func (k *networkKit) testRoundTrip(t *testing.T) {
	sess := k.open(t)
	id := k.id("round")
	sess.mustAttach(t, id)
	if !sess.listed(t, id) {
		t.Errorf("List does not name %q, which is attached", id)
	}
	sess.mustDetach(t, id)
	if sess.listed(t, id) {
		t.Errorf("List names %q after Detach", id)
	}
	// The same id may be attached again once detached.
	sess.mustAttach(t, id)
	sess.mustDetach(t, id)
}

func (k *networkKit) testDetachTwice(t *testing.T) {
	sess := k.open(t)
	id := k.id("twice")
	ns, _ := sess.mustAttach(t, id)
	sess.mustDetach(t, id)
	checkNotFound(t, fmt.Sprintf("the second Detach(%q)", id), sess.n.Detach(callCtx(t), id, ns), nil)
}

func (k *networkKit) testUnknownID(t *testing.T) {
	sess := k.open(t)
	id := k.id("never-attached")
	ns := sess.netns(t, id)
	checkNotFound(t, fmt.Sprintf("Detach(%q) of an id never attached", id), sess.n.Detach(callCtx(t), id, ns), nil)
}

func (k *networkKit) testInvalidID(t *testing.T) {
	sess := k.open(t)
	ns := sess.netns(t, "invalid")
	for _, id := range []string{"", ".", "..", "../" + k.id("escape"), k.id("a/b"), k.id("nul\x00"), strings.Repeat("i", 129)} {
		if _, err := sess.n.Attach(callCtx(t), id, ns, &netplug.AttachOptions{Hostname: "invalid"}); err == nil {
			t.Errorf("Attach(%q) succeeded; want an error", id)
			sess.n.Detach(callCtx(t), id, ns)
		}
	}
}

func (k *networkKit) testExistingID(t *testing.T) {
	sess := k.open(t)
	id := k.id("existing")
	ns, a := sess.mustAttach(t, id)
	other := sess.netns(t, "existing-other")
	_, err := sess.n.Attach(callCtx(t), id, other, &netplug.AttachOptions{Hostname: id})
	switch {
	case err == nil:
		t.Errorf("the second Attach(%q) succeeded; want an error that wraps plugin.ErrExists", id)
	case !errors.Is(err, plugin.ErrExists):
		t.Errorf("the second Attach(%q): %v; want an error that wraps plugin.ErrExists", id, err)
	}
	if left, err := nsLinks(other); err != nil || len(left) > 0 {
		t.Errorf("the refused second Attach(%q) changed the namespace it was given: %q, %v", id, left, err)
	}
	checkAttachment(t, id, ns, a)
	sess.mustDetach(t, id)
}

func (k *networkKit) testConcurrent(t *testing.T) {
	sess := k.open(t)
	n := k.opts.Concurrency
	ids, nses := make([]string, n), make([]string, n)
	atts := make([]*netplug.Attachment, n)
	errs := make([]error, n)
	for i := range n {
		ids[i] = k.id(fmt.Sprintf("conc-%d", i))
		nses[i] = sess.netns(t, ids[i])
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { atts[i], errs[i] = sess.attach(callCtx(t), ids[i], nses[i], nil) })
	}
	wg.Wait()
	addrs := map[netip.Addr]string{}
	for i, err := range errs {
		if err != nil {
			t.Errorf("Attach(%q), one of %d at once: %v", ids[i], n, err)
			continue
		}
		checkAttachment(t, ids[i], nses[i], atts[i])
		for _, p := range atts[i].IPs {
			if prev, ok := addrs[p.Addr()]; ok {
				t.Errorf("%q and %q were both given address %v", prev, ids[i], p.Addr())
			}
			addrs[p.Addr()] = ids[i]
		}
	}
	for i := range n {
		if errs[i] != nil {
			continue
		}
		wg.Go(func() {
			if err := sess.detach(callCtx(t), ids[i]); err != nil {
				t.Errorf("Detach(%q), one of %d at once: %v", ids[i], n, err)
			}
		})
	}
	wg.Wait()
}

func (k *networkKit) testCancel(t *testing.T) {
	sess := k.open(t)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel2()
	for _, c := range []struct {
		name string
		ctx  context.Context
		want error
	}{{"cancelled", cancelled, context.Canceled}, {"expired", expired, context.DeadlineExceeded}} {
		id := k.id("cancel-" + c.name)
		ns := sess.netns(t, id)
		_, err := sess.attach(c.ctx, id, ns, nil)
		if !errors.Is(err, c.want) {
			t.Errorf("Attach(%q) with a %s context: %v; want an error that wraps %v", id, c.name, err, c.want)
		}
		if err == nil {
			sess.detach(callCtx(t), id)
			continue
		}
		if sess.listed(t, id) {
			t.Errorf("Attach(%q) with a %s context failed but left the id attached", id, c.name)
		}
		if left, _ := nsLinks(ns); len(left) > 0 {
			t.Errorf("Attach(%q) with a %s context failed but left %q in the namespace", id, c.name, left)
		}
	}
	for i := range 8 {
		id := k.id(fmt.Sprintf("cancel-mid-%d", i))
		ns := sess.netns(t, id)
		ctx, cancel := context.WithCancel(context.Background())
		var cancelledAt atomic.Int64 // UnixNano, set by the timer
		timer := time.AfterFunc(time.Duration(i)*2*time.Millisecond, func() { cancelledAt.Store(time.Now().UnixNano()); cancel() })
		_, err := sess.attach(ctx, id, ns, nil)
		returned := time.Now()
		timer.Stop()
		cancel()
		if err == nil {
			if err := sess.detach(callCtx(t), id); err != nil {
				t.Errorf("Detach(%q): %v", id, err)
			}
			continue
		}
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Attach(%q) cancelled in the middle: %v; want an error that wraps context.Canceled", id, err)
		}
		if at := cancelledAt.Load(); at != 0 && returned.Sub(time.Unix(0, at)) > hangBound {
			t.Errorf("Attach(%q) returned %v after its context was cancelled: it does not honour its context", id, returned.Sub(time.Unix(0, at)))
		}
		// The plugin may still be at work on the call berth gave up on:
		// it must undo it by itself, soon.
		if !eventually(func() bool { return !sess.listed(t, id) }) {
			t.Errorf("Attach(%q) was cancelled and failed, but left the id attached", id)
		}
		if !eventually(func() bool { left, _ := nsLinks(ns); return len(left) == 0 }) {
			left, _ := nsLinks(ns)
			t.Errorf("Attach(%q) was cancelled and failed, but left %q in the namespace", id, left)
		}
	}
}

func (k *networkKit) testRestart(t *testing.T) {
	sess := k.open(t)
	before := k.id("pre-crash")
	sess.mustAttach(t, before)
	pid := onlyPid(t, sessionPids(t, k.path, sess.others))
	if err := kill9(pid); err != nil {
		t.Fatal(err)
	}
	after := k.id("post-crash")
	ns := sess.netns(t, after)
	a, err := sess.attach(callCtx(t), after, ns, nil)
	if err != nil {
		if !errors.Is(err, plugin.ErrPluginExited) {
			t.Fatalf("Attach(%q), the first call after kill -9 of the plugin: %v; want success or an error that wraps plugin.ErrPluginExited", after, err)
		}
		t.Logf("the first call after kill -9: %v", err)
		sess.detach(callCtx(t), after)
		if a, err = sess.attach(callCtx(t), after, ns, nil); err != nil {
			t.Fatalf("Attach(%q), the second call after kill -9 of the plugin: %v; the plugin should have been started again", after, err)
		}
	}
	checkAttachment(t, after, ns, a)
	if now := onlyPid(t, sessionPids(t, k.path, sess.others)); now == pid {
		t.Fatalf("the plugin's process %d still runs after kill -9", pid)
	}
	if !sess.listed(t, before) {
		t.Logf("the restarted plugin's List does not name %q, attached before the crash; Detach must still free it", before)
	}
	sess.mustDetach(t, before)
	sess.mustDetach(t, after)
}

func (k *networkKit) testKillMidAttach(t *testing.T) {
	sess := k.open(t)
	pid := onlyPid(t, sessionPids(t, k.path, sess.others))
	n := k.opts.Concurrency
	ids, nses := make([]string, n), make([]string, n)
	errs := make([]error, n)
	for i := range n {
		ids[i] = k.id(fmt.Sprintf("midcrash-%d", i))
		nses[i] = sess.netns(t, ids[i])
	}
	var wg sync.WaitGroup
	started := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			if i == n/2 {
				close(started)
			}
			_, errs[i] = sess.attach(callCtx(t), ids[i], nses[i], nil)
		})
	}
	<-started
	if err := kill9(pid); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	failed := 0
	for i, err := range errs {
		if err == nil {
			continue
		}
		failed++
		if !errors.Is(err, plugin.ErrPluginExited) {
			t.Errorf("Attach(%q), in flight when the plugin was killed: %v; want success or an error that wraps plugin.ErrPluginExited", ids[i], err)
		}
	}
	t.Logf("%d of %d Attaches in flight failed when the plugin was killed", failed, n)
	for _, id := range ids {
		err := sess.detach(callCtx(t), id)
		if errors.Is(err, plugin.ErrPluginExited) {
			err = sess.detach(callCtx(t), id)
		}
		if err != nil && !errors.Is(err, plugin.ErrNotFound) {
			t.Errorf("Detach(%q) after the plugin was killed mid-attach: %v", id, err)
		}
	}
}

func (k *networkKit) testDNS(t *testing.T) {
	sess := k.open(t)
	if !sess.n.Info().Has(plugin.CapDNS) {
		t.Skipf("the plugin has no capability %q", plugin.CapDNS)
	}
	id := k.id("dns")
	ns := sess.netns(t, id)
	want := netplug.DNSConfig{
		Nameservers: []netip.Addr{netip.MustParseAddr("192.0.2.53")},
		Search:      []string{"kit.example"},
		Options:     []string{"ndots:2"},
	}
	a, err := sess.attach(callCtx(t), id, ns, &netplug.AttachOptions{Hostname: id, DNS: &want})
	if err != nil {
		t.Fatalf("Attach(%q) with DNS settings: %v", id, err)
	}
	checkAttachment(t, id, ns, a)
	if !slices.Equal(a.DNS.Nameservers, want.Nameservers) || !slices.Equal(a.DNS.Search, want.Search) || !slices.Equal(a.DNS.Options, want.Options) {
		t.Errorf("Attach(%q) was given DNS %+v and reports %+v", id, want, a.DNS)
	}
	sess.mustDetach(t, id)
}

func (k *networkKit) testClose(t *testing.T) {
	sess := k.open(t)
	id := k.id("close")
	sess.mustAttach(t, id)
	sess.mustDetach(t, id)
}

// The Ports check's server, in the sandbox's namespace.
const (
	kitPort     = 8080
	kitGreeting = "plugintest\n"
)

func (k *networkKit) testPorts(t *testing.T) {
	sess := k.open(t)
	if !sess.n.Info().Has(plugin.CapPorts) {
		t.Skipf("the plugin has no capability %q", plugin.CapPorts)
	}
	id := k.id("ports")
	ns := sess.netns(t, id)
	l, err := listenInNetns(ns, kitPort, kitGreeting)
	if err != nil {
		t.Fatalf("plugintest: %v", err)
	}
	defer l.Close()
	want := netplug.PortMapping{HostIP: "127.0.0.1", ContainerPort: kitPort, Protocol: "tcp"}
	a, err := sess.attach(callCtx(t), id, ns, &netplug.AttachOptions{Hostname: id, Ports: []netplug.PortMapping{want}})
	if err != nil {
		t.Fatalf("Attach(%q) with port %d published: %v", id, kitPort, err)
	}
	checkAttachment(t, id, ns, a)
	if len(a.Ports) != 1 || a.Ports[0].ContainerPort != kitPort || a.Ports[0].HostPort == 0 || a.Ports[0].Protocol != "tcp" {
		t.Fatalf("Attach(%q) was asked to publish %+v and reports ports %+v; want it with the host port chosen", id, want, a.Ports)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(a.Ports[0].HostPort)))
	if got, err := greet(addr); err != nil || got != kitGreeting {
		t.Errorf("the published port %s does not reach the server in the namespace: read %q, %v", addr, got, err)
	}
	sess.mustDetach(t, id)
	if got, err := greet(addr); err == nil {
		t.Errorf("the port %s still reaches the namespace after Detach (read %q)", addr, got)
	}
}

// greet connects to addr and reads what the server says.
func greet(addr string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(3 * time.Second))
	b, err := io.ReadAll(conn)
	if len(b) == 0 && err == nil {
		err = io.ErrUnexpectedEOF
	}
	return string(b), err
}
