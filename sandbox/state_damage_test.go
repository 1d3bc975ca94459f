package sandbox

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/netplug"
)

// TestRecoverDamagedState kills -9 a host program with three sandboxes
// (one on a bridge with a published port, one with a disk quota), damages
// their records, and checks that Recover reclaims everything all the same:
// mounts, loop devices, cgroups in every hierarchy, rootfs, state, network
// attachments, leases and rules. Before Recover, the same checks must see
// the leftovers, so that they are known able to fail.
func TestRecoverDamagedState(t *testing.T) {
	stateJSON := func(dir, id string) string { return filepath.Join(dir, id, "state.json") }
	rootfsJSON := func(_, id string) string {
		return filepath.Join(testEnv.store.Root(), "rootfs", "sandbox-"+id, "rootfs.json")
	}
	attachmentJSON := func(dir, id string) string {
		// The host's network state is beside its state directory.
		return filepath.Join(dir, "..", "net-run", "attachments", "berth", id+".json")
	}
	overwrite := func(file func(dir, id string) string, content string) func(*testing.T, string, string) {
		return func(t *testing.T, dir, id string) {
			if err := os.WriteFile(file(dir, id), []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, tc := range []struct {
		name    string
		damage  func(t *testing.T, stateDir, id string)
		damaged bool // the sandbox record is unreadable
	}{
		{"intact", func(*testing.T, string, string) {}, false},
		{"state.json empty", overwrite(stateJSON, ""), true},
		{"state.json garbled", overwrite(stateJSON, "{\"id\":\"\x00\xff"), true},
		{"state.json of another sandbox", overwrite(stateJSON, `{"id":"0123456789abcdef"}`), true},
		{"state.json missing", func(t *testing.T, dir, id string) {
			if err := os.Remove(stateJSON(dir, id)); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"rootfs.json empty", overwrite(rootfsJSON, ""), false},
		{"both garbled", func(t *testing.T, dir, id string) {
			overwrite(stateJSON, "[")(t, dir, id)
			overwrite(rootfsJSON, "]")(t, dir, id)
		}, true},
		{"attachment record garbled", func(t *testing.T, dir, id string) {
			if _, err := os.Stat(attachmentJSON(dir, id)); err == nil {
				overwrite(attachmentJSON, "{")(t, dir, id)
			}
		}, false},
		{"all three garbled", func(t *testing.T, dir, id string) {
			overwrite(stateJSON, "[")(t, dir, id)
			overwrite(rootfsJSON, "]")(t, dir, id)
			if _, err := os.Stat(attachmentJSON(dir, id)); err == nil {
				overwrite(attachmentJSON, "")(t, dir, id)
			}
		}, true},
		{"rootfs already gone", func(t *testing.T, dir, id string) {
			if err := testEnv.store.Release(context.Background(), "sandbox-"+id); err != nil {
				t.Fatal(err)
			}
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := startHost(t)
			h.kill()
			if left := h.leftovers(t); len(left) < 6 {
				t.Fatalf("the host left too little to prove the checks: %q", left)
			}
			for _, id := range h.ids {
				tc.damage(t, h.stateDir, id)
			}
			records, err := ReadRecords(h.stateDir)
			if err != nil {
				t.Fatal(err)
			}
			if len(records) != len(h.ids) {
				t.Fatalf("records listed: %+v, want %d", records, len(h.ids))
			}
			for _, r := range records {
				if r.Owned || (r.State == nil) != tc.damaged || (r.Err != nil) != tc.damaged {
					t.Errorf("record %+v: want dead, damaged %v", r, tc.damaged)
				}
			}

			res, err := Recover(context.Background(), h.options())
			if err != nil {
				t.Fatalf("recover: %v (%+v)", err, res)
			}
			slices.Sort(res.Sandboxes)
			if !slices.Equal(res.Sandboxes, h.ids) {
				t.Errorf("recovered %q, want %q", res.Sandboxes, h.ids)
			}
			if tc.damaged && len(res.Damaged) != len(h.ids) {
				t.Errorf("damaged %q, want all of %q", res.Damaged, h.ids)
			}
			if left := h.leftovers(t); len(left) > 0 {
				t.Errorf("left after recover: %q", left)
			}
			if res, err := Recover(context.Background(), h.options()); err != nil || len(res.Sandboxes)+len(res.Rootfs)+len(res.Cgroups) > 0 {
				t.Errorf("second recover: %+v %v", res, err)
			}
		})
	}
}

// A host is a program started by the test, hosting three sandboxes in a
// state directory, cgroup parent and network state of their own.
type host struct {
	cmd               *exec.Cmd
	stateDir, parent  string
	netConfig, netRun string
	cgm               *cgroup.Manager
	nets              *netplug.Networks
	ids               []string // sorted
	port              string   // the host's end of the bridged sandbox's veth
}

func startHost(t *testing.T) *host {
	t.Helper()
	dir := t.TempDir()
	h := &host{stateDir: filepath.Join(dir, "state"), parent: fmt.Sprintf("berth-test-%d-damage", os.Getpid()),
		netConfig: filepath.Join(dir, "net-config"), netRun: filepath.Join(dir, "net-run")}
	var err error
	if h.cgm, err = cgroup.NewManager(cgroup.Options{Parent: h.parent}); err != nil {
		t.Fatal(err)
	}
	if h.nets, err = netplug.Open(&netplug.Options{ConfigDir: h.netConfig, RunDir: h.netRun,
		Default: netplug.NetworkOptions{Bridge: "berth-sbtest", Subnet: netip.MustParsePrefix("10.216.0.0/24")}}); err != nil {
		t.Fatal(err)
	}
	h.cmd = exec.Command(os.Args[0], "-test.run=^$")
	h.cmd.Env = append(os.Environ(), "BERTH_TEST_HOST=1", "BERTH_TEST_STORE="+testEnv.store.Root(),
		"BERTH_TEST_STATE="+h.stateDir, "BERTH_TEST_CGROUP_PARENT="+h.parent,
		"BERTH_TEST_NET_CONFIG="+h.netConfig, "BERTH_TEST_NET_RUN="+h.netRun)
	out, err := h.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	h.cmd.Stderr = os.Stderr
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Whatever happens to the test, nothing of the host's stays.
	t.Cleanup(func() {
		h.kill()
		Recover(context.Background(), h.options())
		h.cgm.RemoveParent()
	})
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "started\n" {
		t.Fatalf("host process: %q", line)
	}
	entries, err := os.ReadDir(h.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if sandboxIDRE.MatchString(e.Name()) {
			h.ids = append(h.ids, e.Name())
		}
	}
	slices.Sort(h.ids)
	if len(h.ids) != 3 {
		t.Fatalf("host's sandboxes: %q, want 3", h.ids)
	}
	h.port = bridgePort(t, h.netRun)
	return h
}

func (h *host) kill() {
	if h.cmd.ProcessState == nil {
		h.cmd.Process.Kill()
		h.cmd.Wait()
	}
}

func (h *host) options() *Options {
	return &Options{Storage: testEnv.store, Cgroups: h.cgm, StateDir: h.stateDir, Networks: h.nets}
}

// leftovers lists what the host's sandboxes left on the machine, found
// without the code under test where the kernel can say: mounts in
// mountinfo, loop devices in sysfs, cgroup directories in every mounted
// hierarchy, directories, iptables rules naming the sandboxes, IPAM leases
// and attachment records in the host's own network state, the bridged
// sandbox's veth and its nftables chain. Any listing that fails fails the
// test.
func (h *host) leftovers(t *testing.T) []string {
	t.Helper()
	var left []string
	for _, id := range h.ids {
		rootfs := filepath.Join(testEnv.store.Root(), "rootfs", "sandbox-"+id)
		for _, m := range mountsUnder(t, rootfs) {
			left = append(left, "mount "+m)
		}
		for _, m := range mountsUnder(t, filepath.Join(h.stateDir, id)) {
			left = append(left, "mount "+m)
		}
		for _, l := range loopsBackedBy(rootfs) {
			left = append(left, "loop device "+l)
		}
		if _, err := os.Lstat(rootfs); !errors.Is(err, fs.ErrNotExist) {
			left = append(left, fmt.Sprintf("rootfs %s (%v)", rootfs, err))
		}
		for _, d := range cgroupDirs(t, h.parent, id) {
			left = append(left, "cgroup "+d)
		}
	}
	entries, err := os.ReadDir(h.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != rootLockName && e.Name() != "seccomp" {
			left = append(left, "state "+e.Name())
		}
	}
	rules, err := exec.Command("iptables-save").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(rules), "\n") {
		for _, id := range h.ids {
			if strings.Contains(l, id) {
				left = append(left, "iptables "+l)
			}
		}
	}
	leases, err := filepath.Glob(filepath.Join(h.netRun, "ipam", "*", "[0-9]*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range leases {
		left = append(left, "lease "+l)
	}
	records, err := filepath.Glob(filepath.Join(h.netRun, "attachments", "*", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range records {
		left = append(left, "attachment "+r)
	}
	// The host's end of the bridged sandbox's veth, and its filter.
	if err := exec.Command("ip", "link", "show", "dev", h.port).Run(); err == nil {
		left = append(left, "veth "+h.port)
	} else if _, ok := err.(*exec.ExitError); !ok {
		t.Fatal(err)
	}
	ruleset, err := exec.Command("nft", "list", "ruleset").Output()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(ruleset), "chain port-"+h.port+" ") {
		left = append(left, "nftables chain port-"+h.port)
	}
	return left
}

// bridgePort returns the host's end of the veth of the one attachment
// under runDir, from its record.
func bridgePort(t *testing.T, runDir string) string {
	t.Helper()
	records, err := filepath.Glob(filepath.Join(runDir, "attachments", "*", "*.json"))
	if err != nil || len(records) != 1 {
		t.Fatalf("attachment records: %q %v, want one", records, err)
	}
	b, err := os.ReadFile(records[0])
	if err != nil {
		t.Fatal(err)
	}
	var r struct{ Port string }
	if err := json.Unmarshal(b, &r); err != nil || r.Port == "" {
		t.Fatalf("attachment record %s: %v, port %q", b, err, r.Port)
	}
	return r.Port
}

// cgroupDirs returns the directories of cgroup name under parent in every
// cgroup hierarchy mounted on the host, v1 and v2.
func cgroupDirs(t *testing.T, parent, name string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	seen := 0
	for _, l := range strings.Split(string(b), "\n") {
		// Fields: id parent major:minor root mountpoint options ... - fstype
		pre, post, ok := strings.Cut(l, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(g) < 1 || (g[0] != "cgroup" && g[0] != "cgroup2") || f[3] != "/" {
			continue
		}
		seen++
		d := filepath.Join(f[4], parent, name)
		if _, err := os.Lstat(d); err == nil {
			out = append(out, d)
		} else if !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
	}
	if seen == 0 {
		t.Fatal("no cgroup hierarchy in mountinfo")
	}
	return out
}

// TestRecoverSparesLiveSandboxes damages the records of live sandboxes,
// one running and one whose start is caught between making its state
// directory and writing its record, and checks that Recover leaves both
// alone, and that ReadRecords lists them as owned.
func TestRecoverSparesLiveSandboxes(t *testing.T) {
	stateDir := filepath.Join(t.TempDir(), "state")
	o := opts(func(o *Options) { o.StateDir = stateDir; o.Args = []string{"sleep", "1000"} })
	sb := New("alpine:test", o)
	if err := sb.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	// The record is completed beside the workload after Start returns,
	// which would undo the damage done too soon; Open waits for it.
	h, err := Open(context.Background(), sb.ID(), o)
	if err != nil {
		t.Fatal(err)
	}
	h.Close()
	if err := os.WriteFile(filepath.Join(stateDir, sb.ID(), "state.json"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A start in progress: its directory is made and locked, and its
	// record not yet written.
	starting := filepath.Join(stateDir, "00000000000000aa")
	lock, err := claimStateDir(stateDir, starting)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()

	// A dead sandbox whose record, damaged but still well-formed, names
	// the live one's cgroup and rootfs.
	liar := filepath.Join(stateDir, "00000000000000cc")
	if err := os.Mkdir(liar, 0o711); err != nil {
		t.Fatal(err)
	}
	lie := fmt.Sprintf(`{"id":"00000000000000cc","cgroup":%q,"rootfsKey":"sandbox-%s","host":{"pid":1,"startTime":1}}`, sb.ID(), sb.ID())
	if err := os.WriteFile(filepath.Join(liar, "state.json"), []byte(lie), 0o600); err != nil {
		t.Fatal(err)
	}
	records, err := ReadRecords(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]Record{}
	for _, r := range records {
		byID[r.ID] = r
	}
	for _, id := range []string{sb.ID(), "00000000000000aa"} {
		if r := byID[id]; !r.Owned || r.Err == nil {
			t.Errorf("record %+v: want owned and damaged", r)
		}
	}
	if r := byID["00000000000000cc"]; len(records) != 3 || r.Owned || r.State == nil {
		t.Errorf("records: %+v, want a third, dead and readable", records)
	}
	res, err := Recover(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Sandboxes, []string{"00000000000000cc"}) {
		t.Errorf("recover reclaimed %q, want only the dead one", res.Sandboxes)
	}
	for _, d := range []string{starting, filepath.Join(stateDir, sb.ID())} {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("live sandbox's state: %v", err)
		}
	}
	if _, err := testEnv.cgroups.Open(sb.ID()); err != nil {
		t.Errorf("live sandbox's cgroup: %v", err)
	}
	if res, err := sb.Exec(context.Background(), &ExecOptions{Args: []string{"true"}}); err != nil || !res.Success() {
		t.Errorf("exec in the live sandbox after recover: %+v %v", res, err)
	}

	// Once its owner lets go, the start that never finished is reclaimed.
	lock.Close()
	res, err = Recover(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Sandboxes, []string{"00000000000000aa"}) || !slices.Equal(res.Damaged, res.Sandboxes) {
		t.Errorf("recover after the start was abandoned: %+v", res)
	}
	if _, err := os.Stat(starting); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("abandoned start's state: %v", err)
	}
}

// TestRecoverWaitsForStartsBetweenMkdirAndLock holds a start in the
// window between making its state directory and locking it, and checks
// that Recover, run meanwhile, does not take the directory for one that
// a kill left behind.
func TestRecoverWaitsForStartsBetweenMkdirAndLock(t *testing.T) {
	stateDir := filepath.Join(t.TempDir(), "state")
	root, err := lockRoot(stateDir, unix.LOCK_SH)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(stateDir, "00000000000000bb")
	if err := os.Mkdir(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	done := make(chan RecoverResult)
	go func() {
		res, err := Recover(context.Background(), opts(func(o *Options) { o.StateDir = stateDir }))
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	// However long the start dawdles here, Recover waits for it.
	for range 20 {
		select {
		case res := <-done:
			t.Fatalf("recover ran during a start: %+v", res)
		default:
		}
		unix.Nanosleep(&unix.Timespec{Nsec: 5e6}, nil)
	}
	lock, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	root.Close()
	if res := <-done; len(res.Sandboxes) > 0 {
		t.Errorf("recover reclaimed a sandbox being started: %+v", res)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Errorf("the starting sandbox's state: %v", err)
	}
}
