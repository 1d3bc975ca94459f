package netplug

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/utils"
	"golang.org/x/sys/unix"
)

// An Attach killed after the bridge plugin set up masquerading but before
// its result reached the record leaves a record without addresses and no
// cache entry. Detach must still find the plugins' rules: by the leased
// address, by the address the masquerading rule names once the lease is
// gone (a detach cut short), and the masquerading chain by the ID alone.
func TestDetachKilledBeforeResult(t *testing.T) {
	n := testNetworks(t, "berth-t31", "10.215.31.0/24")
	net := n.network(n.def)
	for _, tc := range []struct {
		name                string
		noLease, noJump     bool
		forwardRulesUnknown bool // nothing left names the address
	}{
		{name: "lease"},
		{name: "masquerading rule", noLease: true},
		{name: "chain alone", noLease: true, noJump: true, forwardRulesUnknown: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			ns := newNS(t)
			id := "killedres-" + strings.ReplaceAll(tc.name, " ", "-")
			a, err := net.Attach(ctx, id, ns.path, &AttachOptions{Ports: []PortMapping{{HostIP: "127.0.0.1", ContainerPort: 80}}})
			if err != nil {
				t.Fatal(err)
			}
			addr := a.IPs[0].Addr().String() + "/32"
			chain, comment := utils.FormatChainName(DefaultNetwork, id), utils.FormatComment(DefaultNetwork, id)
			if len(rulesMentioning(chain)) == 0 || len(rulesMentioning(addr)) < 3 {
				t.Fatalf("no masquerading chain %s or rules for %s to leave", chain, addr)
			}

			// What the kill leaves: the record as claim wrote it, no
			// cache entry.
			rec, err := readRecord(n.recordPath(DefaultNetwork, id))
			if err != nil {
				t.Fatal(err)
			}
			rec.IPs, rec.Gateway, rec.Result, rec.Port, rec.PortMAC = nil, netip.Addr{}, nil, "", ""
			if err := n.writeRecord(rec, DefaultNetwork, false); err != nil {
				t.Fatal(err)
			}
			if err := n.forgetCached(DefaultNetwork, id, ifName); err != nil {
				t.Fatal(err)
			}
			if tc.noLease {
				lease := filepath.Join(n.opts.RunDir, "ipam", DefaultNetwork, a.IPs[0].Addr().String())
				if err := os.Remove(lease); err != nil {
					t.Fatal(err)
				}
			}
			if tc.noJump {
				mustOutput("iptables", "-w", "-t", "nat", "-D", "POSTROUTING", "-s", addr, "-m", "comment", "--comment", comment, "-j", chain)
			}
			ns.kill()
			waitVeths(0)
			if err := n.Prune(ctx); err != nil {
				t.Fatal(err)
			}
			want := []string{chain, comment}
			if !tc.forwardRulesUnknown {
				want = append(want, addr)
			} else {
				// The firewall plugin's, which only the address names.
				mustOutput("iptables", "-w", "-D", "CNI-FORWARD", "-d", addr, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT")
				mustOutput("iptables", "-w", "-D", "CNI-FORWARD", "-s", addr, "-j", "ACCEPT")
			}
			if left := rulesMentioning(want...); len(left) > 0 {
				t.Errorf("rules left:\n%s", strings.Join(left, "\n"))
			}
			if leases, recs, cache := stateFiles(n); leases+recs+cache != 0 {
				t.Errorf("left %d leases, %d records, %d cache entries", leases, recs, cache)
			}
		})
	}
}

// libcni writes its cache entry in place: an Attach killed while it
// writes leaves an empty one. Detach, which then runs DEL from the
// record's result, must remove it all the same; Prune removes entries of
// berth's networks that have no record, and only those.
func TestEmptyCacheEntry(t *testing.T) {
	n := testNetworks(t, "berth-t32", "10.215.32.0/24")
	ctx := t.Context()
	net := n.network(n.def)
	entry := func(cniName, id string) string {
		return filepath.Join(n.cacheResultsDir(), cniName+"-"+id+"-"+ifName)
	}

	ns := newNS(t)
	if _, err := net.Attach(ctx, "emptycache", ns.path, nil); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(entry(DefaultNetwork, "emptycache"), 0); err != nil {
		t.Fatalf("the attachment's cache entry: %v", err)
	}
	if err := net.Detach(ctx, "emptycache", ns.path); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(entry(DefaultNetwork, "emptycache")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("detach left the empty cache entry (stat: %v)", err)
	}

	// A live attachment, whose entry stays; and entries that outlived
	// theirs, one of a network whose name has a dash, as named networks'
	// CNI names all do.
	live := newNS(t)
	if _, err := net.Attach(ctx, "live-one", live.path, nil); err != nil {
		t.Fatal(err)
	}
	stale := []string{entry(DefaultNetwork, "gone-1"), entry("berth-some-net", "gone-2"), entry(DefaultNetwork, "gone3")}
	foreign := entry("other-net", "gone-4")
	for _, p := range append(stale, foreign) {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { os.Remove(foreign) })
	if err := n.Prune(ctx); err != nil {
		t.Fatal(err)
	}
	for _, p := range stale {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Prune left %s (stat: %v)", filepath.Base(p), err)
		}
	}
	for _, p := range []string{foreign, entry(DefaultNetwork, "live-one")} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("Prune removed %s: %v", filepath.Base(p), err)
		}
	}
	if err := net.Detach(ctx, "live-one", live.path); err != nil {
		t.Fatal(err)
	}
}

// The environment of attachChild, the program TestKilledDuringAttach
// kills in the middle of an Attach.
const (
	childEnv       = "NETPLUG_TEST_ATTACH_CHILD"
	childRunDir    = "NETPLUG_TEST_RUN_DIR"
	childConfigDir = "NETPLUG_TEST_CONFIG_DIR"
	childPluginDir = "NETPLUG_TEST_PLUGIN_DIR"
	childNetNS     = "NETPLUG_TEST_NETNS"
)

// TestAttachChild is not a test: it is the program TestKilledDuringAttach
// runs and kills, which attaches a namespace and publishes a port.
func TestAttachChild(t *testing.T) {
	id := os.Getenv(childEnv)
	if id == "" {
		t.Skip("run by TestKilledDuringAttach")
	}
	n, err := Open(&Options{
		PluginDir: os.Getenv(childPluginDir),
		ConfigDir: os.Getenv(childConfigDir),
		RunDir:    os.Getenv(childRunDir),
		Default:   NetworkOptions{Bridge: "berth-t33", Subnet: netip.MustParsePrefix("10.215.33.0/24")},
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = n.network(n.def).Attach(context.Background(), id, os.Getenv(childNetNS),
		&AttachOptions{Ports: []PortMapping{{HostIP: "127.0.0.1", ContainerPort: 80}}})
	t.Fatalf("the attachment was to be killed, and ended: %v", err)
}

// A program killed while a plugin of its Attach runs must not leave the
// plugin running, to set up what garbage collection has undone already;
// and whatever the plugin started in turn must keep Prune and DetachAll
// waiting until it ends. The bridge plugin is a script here that starts
// such a process, and waits.
func TestKilledDuringAttach(t *testing.T) {
	n := testNetworks(t, "berth-t33", "10.215.33.0/24")
	ctx := t.Context()
	const id = "killedmid"

	// The plugins, but bridge: a script that records its PID and that of
	// a child it leaves, and runs the real plugin once told to go.
	plugins, marks := t.TempDir(), t.TempDir()
	entries, err := os.ReadDir(pluginDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != "bridge" {
			if err := os.Symlink(filepath.Join(pluginDir, e.Name()), filepath.Join(plugins, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
	goFile := filepath.Join(marks, "go")
	script := fmt.Sprintf(`#!/bin/sh
( while [ ! -e %[1]s ]; do sleep 0.05; done ) &
echo $! > %[2]s/straggler.tmp && mv %[2]s/straggler.tmp %[2]s/straggler
echo $$ > %[2]s/plugin.tmp && mv %[2]s/plugin.tmp %[2]s/plugin
while [ ! -e %[1]s ]; do sleep 0.05; done
exec %[3]s/bridge
`, goFile, marks, pluginDir)
	if err := os.WriteFile(filepath.Join(plugins, "bridge"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	// Whatever happens, the script's processes end with the test.
	t.Cleanup(func() { os.WriteFile(goFile, nil, 0o644) })

	ns := newNS(t)
	child := exec.Command(os.Args[0], "-test.run=^TestAttachChild$", "-test.count=1")
	child.Env = append(os.Environ(),
		childEnv+"="+id, childRunDir+"="+n.opts.RunDir, childConfigDir+"="+n.opts.ConfigDir,
		childPluginDir+"="+plugins, childNetNS+"="+ns.path)
	var out strings.Builder
	child.Stdout, child.Stderr = &out, &out
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	ended := make(chan struct{})
	go func() { child.Wait(); close(ended) }()
	t.Cleanup(func() { child.Process.Kill(); <-ended })
	pluginPID, err := waitPID(filepath.Join(marks, "plugin"), ended)
	if err != nil {
		t.Fatalf("the bridge plugin did not start: %v\n%s", err, out.String())
	}
	stragglerPID, err := waitPID(filepath.Join(marks, "straggler"), ended)
	if err != nil {
		t.Fatal(err)
	}

	child.Process.Kill()
	<-ended
	if !waitGone(pluginPID, 30*time.Second) {
		t.Errorf("the plugin (PID %d) outlived the program that ran it", pluginPID)
	}
	if !alive(stragglerPID) {
		t.Fatalf("the plugin's child (PID %d) is gone already", stragglerPID)
	}
	// The plugin's child holds the state lock the Attach held.
	f, err := os.Open(n.lockPath("state"))
	if err != nil {
		t.Fatal(err)
	}
	err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	f.Close()
	if !errors.Is(err, unix.EWOULDBLOCK) {
		t.Errorf("the state lock is free while a process the plugin started runs (flock: %v)", err)
	}

	// gc waits for it: until the context ends, while it runs.
	for name, f := range map[string]func(context.Context) error{
		"DetachAll": func(ctx context.Context) error { return n.DetachAll(ctx, id) },
		"Prune":     n.Prune,
	} {
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		err := f(wctx)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s while a process the plugin started runs: %v, want it to wait", name, err)
		}
	}
	// Then DetachAll undoes what is there.
	if err := os.WriteFile(goFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := n.DetachAll(ctx, id); err != nil {
		t.Fatal(err)
	}
	if !waitGone(stragglerPID, 30*time.Second) || !waitGone(pluginPID, 30*time.Second) {
		t.Fatal("the plugin's processes did not end once told to")
	}
	ns.kill()
	waitVeths(0)
	if err := n.Prune(ctx); err != nil {
		t.Fatal(err)
	}
	chain := utils.FormatChainName(DefaultNetwork, id)
	if left := rulesMentioning(chain, utils.FormatComment(DefaultNetwork, id)); len(left) > 0 {
		t.Errorf("rules left:\n%s", strings.Join(left, "\n"))
	}
	if leases, recs, cache := stateFiles(n); leases+recs+cache != 0 {
		t.Errorf("left %d leases, %d records, %d cache entries", leases, recs, cache)
	}
}

// waitPID waits for a PID file to appear, until ended is closed.
func waitPID(path string, ended <-chan struct{}) (int, error) {
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		data, err := os.ReadFile(path)
		if err == nil {
			return strconv.Atoi(strings.TrimSpace(string(data)))
		}
		select {
		case <-ended:
			return 0, errors.New("the program ended")
		default:
		}
	}
	return 0, fmt.Errorf("no %s after a minute", path)
}

// alive reports whether the process pid runs: exists, and is no zombie.
func alive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command's closing parenthesis.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// waitGone waits up to limit for the process pid to end.
func waitGone(pid int, limit time.Duration) bool {
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if !alive(pid) {
			return true
		}
	}
	return !alive(pid)
}
