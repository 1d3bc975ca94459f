//go:build linux

package cgroup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

func TestDeviceRuleValidate(t *testing.T) {
	for _, d := range []DeviceRule{
		{Type: 'a', Major: 1, Minor: 3, Access: "rwm"},
		{Type: CharDevice, Major: -2, Minor: 3, Access: "rwm"},
		{Type: CharDevice, Major: 4096, Minor: 3, Access: "rwm"},
		{Type: BlockDevice, Major: 7, Minor: 1 << 20, Access: "r"},
		{Type: CharDevice, Major: 1, Minor: 3, Access: ""},
		{Type: CharDevice, Major: 1, Minor: 3, Access: "rwx"},
		{Type: CharDevice, Major: 1, Minor: 3, Access: "rr"},
	} {
		err := (&Resources{Devices: []DeviceRule{d}}).validate()
		if !errors.Is(err, ErrInvalidResources) {
			t.Errorf("%+v: validate = %v, want ErrInvalidResources", d, err)
		}
	}
	for _, d := range []DeviceRule{
		{Type: CharDevice, Major: 1, Minor: 3, Access: "rwm"},
		{Type: CharDevice, Major: 136, Minor: AnyDeviceNumber, Access: "wr"},
		{Type: BlockDevice, Major: AnyDeviceNumber, Minor: AnyDeviceNumber, Access: "m"},
	} {
		if err := (&Resources{Devices: []DeviceRule{d}}).validate(); err != nil {
			t.Errorf("%+v: %v", d, err)
		}
	}
	if got := (DeviceRule{Type: CharDevice, Major: 136, Minor: AnyDeviceNumber, Access: "rw"}).String(); got != "c 136:* rw" {
		t.Errorf("String = %q", got)
	}
}

// A node is a device node the tests make, outside any cgroup they
// restrict, for a member to open.
type node struct {
	name         string
	typ          uint32 // unix.S_IFCHR or unix.S_IFBLK
	major, minor uint32
}

// hostileNodes are devices a sandbox must never reach: a loop device
// (the host's disks are reached the same way), the kernel log, KVM, the
// console and a virtual terminal.
var hostileNodes = []node{
	{"loop0", unix.S_IFBLK, 7, 0},
	{"kmsg", unix.S_IFCHR, 1, 11},
	{"kvm", unix.S_IFCHR, 10, 232},
	{"console", unix.S_IFCHR, 5, 1},
	{"tty1", unix.S_IFCHR, 4, 1},
}

// testDeviceRules allow null fully and zero for reading only.
var testDeviceRules = []DeviceRule{
	{Type: CharDevice, Major: 1, Minor: 3, Access: "rwm"},
	{Type: CharDevice, Major: 1, Minor: 5, Access: "r"},
}

func makeNodes(t *testing.T, dir string, nodes []node) {
	t.Helper()
	for _, n := range nodes {
		if err := unix.Mknod(filepath.Join(dir, n.name), n.typ|0o666, int(unix.Mkdev(n.major, n.minor))); err != nil {
			t.Fatal(err)
		}
	}
}

// deviceProbe is a script that tries, for each node in dir, what its
// line says, and prints "NAME ACCESS ok" or "NAME ACCESS: ERROR". Each
// open is made by a subshell, which is no session leader, so that
// opening a terminal can never make it anyone's controlling one.
func deviceProbe(dir string, tries []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "cd %s\n", dir)
	b.WriteString(`try() { if err=$( (eval "$2") 2>&1 ); then echo "$1 ok"; else echo "$1: $err"; fi; }` + "\n")
	for _, t := range tries {
		b.WriteString(t + "\n")
	}
	return b.String()
}

// probeScript opens every hostile node for reading, null for reading and
// writing, zero for reading and for writing, and makes nodes with mknod.
func probeScript(dir string) string {
	var tries []string
	for _, n := range hostileNodes {
		tries = append(tries, fmt.Sprintf(`try "%s r" "exec 3<%s"`, n.name, n.name))
	}
	tries = append(tries,
		`try "null rw" "exec 3<>null"`,
		`try "zero r" "exec 3<zero"`,
		`try "zero w" "exec 3>zero"`,
		`try "mknod-null m" "mknod made-null c 1 3"`,
		`try "mknod-loop0 m" "mknod made-loop0 b 7 0"`,
		`try "mknod-kmsg m" "mknod made-kmsg c 1 11"`,
	)
	return deviceProbe(dir, tries)
}

// runProbe runs script in c, with CAP_MKNOD and every other capability of
// root, and returns what it printed.
func runProbe(t *testing.T, c *Cgroup, script string) string {
	t.Helper()
	ch := startChild(t, c, script, nil)
	if err := c.Add(ch.pid()); err != nil {
		t.Fatal(err)
	}
	ch.release(t)
	if ws := ch.wait(t, 10*time.Second); ws.ExitStatus() != 0 {
		t.Errorf("probe exited with %v", ws)
	}
	b, err := os.ReadFile(ch.out)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// checkProbe checks each line of out: allowed ones must say "ok", the
// rest must have failed with EPERM.
func checkProbe(t *testing.T, out string, allowed ...string) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	want := len(hostileNodes) + 6
	if len(lines) != want {
		t.Fatalf("probe printed %d lines, want %d:\n%s", len(lines), want, out)
	}
	for _, line := range lines {
		what, _, _ := strings.Cut(line, ":")
		what = strings.TrimSuffix(what, " ok")
		if slices.Contains(allowed, what) {
			if !strings.HasSuffix(line, " ok") {
				t.Errorf("%s: refused, want allowed: %s", what, line)
			}
			continue
		}
		if !strings.Contains(line, "Operation not permitted") {
			t.Errorf("%s: want EPERM: %s", what, line)
		}
	}
}

// The allowlist holds on every layout: v1's devices controller alone, a
// BPF program on a cgroup2 hierarchy alone, and both on the host's own
// (Hybrid) layout. The member is root with CAP_MKNOD: it can make any
// node it is allowed to, and nothing else.
func TestDeviceRules(t *testing.T) {
	for _, mode := range modes() {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			m := mode.new(t)
			dir := t.TempDir()
			makeNodes(t, dir, append(hostileNodes, node{"null", unix.S_IFCHR, 1, 3}, node{"zero", unix.S_IFCHR, 1, 5}))

			c := create(t, m, &Resources{Devices: testDeviceRules})
			checkDevicesInstalled(t, c, testDeviceRules)
			out := runProbe(t, c, probeScript(dir))
			t.Logf("probe:\n%s", out)
			checkProbe(t, out, "null rw", "zero r", "mknod-null m")

			// Update replaces the list: the kernel log becomes readable,
			// zero writable, and null is gone.
			next := []DeviceRule{
				{Type: CharDevice, Major: 1, Minor: 11, Access: "r"},
				{Type: CharDevice, Major: 1, Minor: 5, Access: "rw"},
			}
			if err := c.Update(&Resources{Devices: next}); err != nil {
				t.Fatal(err)
			}
			checkDevicesInstalled(t, c, next)
			for _, f := range []string{"made-null"} {
				os.Remove(filepath.Join(dir, f))
			}
			out = runProbe(t, c, probeScript(dir))
			t.Logf("probe after Update:\n%s", out)
			checkProbe(t, out, "kmsg r", "zero r", "zero w")
		})
	}
}

// checkDevicesInstalled checks that each mechanism of c's layout holds
// rules: devices.list in v1, one device program without a BPF link on
// the cgroup2 hierarchy.
func checkDevicesInstalled(t *testing.T, c *Cgroup, rules []DeviceRule) {
	t.Helper()
	if dir := c.v1["devices"]; dir != "" {
		var want []string
		for _, r := range rules {
			want = append(want, r.String())
		}
		if got := readTrimmed(t, filepath.Join(dir, "devices.list")); got != strings.Join(want, "\n") {
			t.Errorf("devices.list:\n%s\nwant\n%s", got, strings.Join(want, "\n"))
		}
	}
	if c.unified != "" {
		progs := attachedDevicePrograms(t, c)
		if len(progs) != 1 {
			t.Fatalf("%d device programs attached to %s, want 1", len(progs), c.unified)
		}
		if _, ok := progs[0].LinkID(); ok {
			t.Errorf("device program attached through a BPF link, which would detach with its descriptor")
		}
	}
}

// attachedDevicePrograms returns the device programs attached to c's cgroup2
// directory.
func attachedDevicePrograms(t *testing.T, c *Cgroup) []link.AttachedProgram {
	t.Helper()
	fd, err := unix.Open(c.unified, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	res, err := link.QueryPrograms(link.QueryOptions{Target: fd, Attach: ebpf.AttachCGroupDevice})
	if err != nil {
		t.Fatal(err)
	}
	return res.Programs
}

// The attachment belongs to the cgroup: with the Manager's own descriptor
// of the program closed, the rules still hold.
func TestDeviceProgramOutlivesLoader(t *testing.T) {
	m := v2MountManager(t, nil)
	dir := t.TempDir()
	makeNodes(t, dir, append(hostileNodes, node{"null", unix.S_IFCHR, 1, 3}, node{"zero", unix.S_IFCHR, 1, 5}))
	c := create(t, m, &Resources{Devices: testDeviceRules})
	m.devices.close()
	runtime.GC()
	checkDevicesInstalled(t, c, testDeviceRules)
	checkProbe(t, runProbe(t, c, probeScript(dir)), "null rw", "zero r", "mknod-null m")
}

// Cgroups with the same rules share one loaded program; other rules get
// another.
func TestDeviceProgramShared(t *testing.T) {
	m := v2MountManager(t, nil)
	id := func(c *Cgroup) ebpf.ProgramID {
		progs := attachedDevicePrograms(t, c)
		if len(progs) != 1 {
			t.Fatalf("%d device programs attached, want 1", len(progs))
		}
		return progs[0].ID
	}
	a := create(t, m, &Resources{Devices: testDeviceRules})
	b := create(t, m, &Resources{Devices: testDeviceRules})
	other := create(t, m, &Resources{Devices: testDeviceRules[:1]})
	if id(a) != id(b) {
		t.Errorf("same rules, programs %d and %d", id(a), id(b))
	}
	if id(a) == id(other) {
		t.Errorf("different rules, one program %d", id(a))
	}
}

// A layout that cannot enforce device rules says so rather than ignoring
// them.
func TestDeviceRulesUnsupported(t *testing.T) {
	m := hostManager(t, Options{Mode: V1, V1Mounts: map[string]string{"memory": "/sys/fs/cgroup/memory"}})
	_, err := m.Create(uniqueName(), &Resources{Devices: testDeviceRules})
	if !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("Create with device rules and no devices hierarchy = %v, want ErrUnsupported", err)
	}
	if names, err := m.List(); err != nil || len(names) != 0 {
		t.Errorf("cgroups left behind: %v (%v)", names, err)
	}
}

// BenchmarkCreateDevices measures Create+Remove of a cgroup with a
// sandbox's device allowlist against one without, on the host's layout
// and on each path alone.
func BenchmarkCreateDevices(b *testing.B) {
	rules := benchDeviceRules()
	for _, mode := range []struct {
		name string
		new  func(b *testing.B) *Manager
	}{
		{"host", func(b *testing.B) *Manager { return benchManager(b, Options{}) }},
		{"v1", func(b *testing.B) *Manager { return benchManager(b, Options{Mode: V1}) }},
		{"v2mount", func(b *testing.B) *Manager { return v2MountManager(b, slog.New(slog.DiscardHandler)) }},
	} {
		for _, devices := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/devices=%v", mode.name, devices), func(b *testing.B) {
				m := mode.new(b)
				r := &Resources{}
				if devices {
					r.Devices = rules
				}
				ctx := b.Context()
				for i := 0; b.Loop(); i++ {
					c, err := m.Create(uniqueName(), r)
					if err != nil {
						b.Fatal(err)
					}
					b.StopTimer()
					if err := c.Remove(ctx); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
				}
			})
		}
	}
}

func benchManager(b *testing.B, opts Options) *Manager {
	requireRoot(b)
	opts.Parent = testParent
	opts.Logger = slog.New(slog.DiscardHandler)
	m, err := NewManager(opts)
	if err != nil {
		b.Skip(err)
	}
	return m
}

// benchDeviceRules is a sandbox's allowlist: seven nodes and the eight
// pty majors.
func benchDeviceRules() []DeviceRule {
	var rules []DeviceRule
	for _, n := range [][2]int64{{1, 3}, {1, 5}, {1, 7}, {1, 8}, {1, 9}, {5, 0}, {5, 2}} {
		rules = append(rules, DeviceRule{Type: CharDevice, Major: n[0], Minor: n[1], Access: "rwm"})
	}
	for major := int64(136); major <= 143; major++ {
		rules = append(rules, DeviceRule{Type: CharDevice, Major: major, Minor: AnyDeviceNumber, Access: "rwm"})
	}
	return rules
}

// BenchmarkApplyDevices measures what a sandbox's allowlist costs by
// itself: writing it (Update does what Create does) to one cgroup, on
// each layout.
func BenchmarkApplyDevices(b *testing.B) {
	rules := &Resources{Devices: benchDeviceRules()}
	for _, mode := range []struct {
		name string
		new  func(b *testing.B) *Manager
	}{
		{"host", func(b *testing.B) *Manager { return benchManager(b, Options{}) }},
		{"v1", func(b *testing.B) *Manager { return benchManager(b, Options{Mode: V1}) }},
		{"v2mount", func(b *testing.B) *Manager { return v2MountManager(b, slog.New(slog.DiscardHandler)) }},
	} {
		b.Run(mode.name, func(b *testing.B) {
			m := mode.new(b)
			c, err := m.Create(uniqueName(), nil)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Remove(context.Background())
			for b.Loop() {
				if err := c.Update(rules); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkLoadDeviceProgram measures loading a sandbox's device program,
// which a Manager does once per rule set (and a process that starts one
// sandbox and exits, as the berth command does, once per start).
func BenchmarkLoadDeviceProgram(b *testing.B) {
	requireRoot(b)
	rules := benchDeviceRules()
	for b.Loop() {
		var d devicePrograms
		if _, err := d.program(rules); err != nil {
			b.Fatal(err)
		}
		d.close()
	}
}

// Nothing of a device program outlives its cgroups and its Manager: once
// the cgroup is removed and the Manager has let the program go (as when
// the process that made it has died, and Remove runs from a later one),
// the kernel frees it.
func TestDeviceProgramGoesWithCgroup(t *testing.T) {
	m := v2MountManager(t, nil)
	c, err := m.Create(uniqueName(), &Resources{Devices: testDeviceRules})
	if err != nil {
		t.Fatal(err)
	}
	progs := attachedDevicePrograms(t, c)
	if len(progs) != 1 {
		t.Fatalf("%d device programs attached, want 1", len(progs))
	}
	m.devices.close()
	removeAndCheck(t, c)
	// The kernel releases a removed cgroup's programs from a work queue.
	eventually(t, 30*time.Second, "the device program freed", func() bool {
		p, err := ebpf.NewProgramFromID(progs[0].ID)
		if err == nil {
			p.Close()
		}
		return errors.Is(err, os.ErrNotExist)
	})
}

// Under a parent that allows less (as when berth itself runs in a
// container), the rules the parent refuses are left out on v1, where the
// kernel would refuse them, and the rest still apply.
func TestDeviceRulesUnderRestrictedParent(t *testing.T) {
	requireRoot(t)
	// A parent of its own: the test restricts it.
	m, err := NewManager(Options{Mode: V1, Parent: testParent + "-restricted", Logger: testLogger(t)})
	if err != nil {
		t.Skip(err)
	}
	if m.v1["devices"] == "" {
		t.Skip("no v1 devices hierarchy")
	}
	t.Cleanup(func() {
		if err := m.RemoveParent(); err != nil {
			t.Error(err)
		}
	})
	if err := m.ensureParent(); err != nil {
		t.Fatal(err)
	}
	parent := filepath.Join(m.v1["devices"], m.parent)
	if err := writeFile(filepath.Join(parent, "devices.deny"), "a"); err != nil {
		t.Fatal(err)
	}
	if err := writeFile(filepath.Join(parent, "devices.allow"), "c 1:3 rwm"); err != nil {
		t.Fatal(err)
	}
	c := create(t, m, &Resources{Devices: testDeviceRules})
	if got := readTrimmed(t, filepath.Join(c.v1["devices"], "devices.list")); got != "c 1:3 rwm" {
		t.Errorf("devices.list = %q, want only what the parent allows", got)
	}
}

// A Manager keeps at most maxDevicePrograms programs loaded, and closes
// each one it lets go: a host-side process that meets ever new rule sets
// holds a bounded number of BPF descriptors.
func TestDeviceProgramsBounded(t *testing.T) {
	requireRoot(t)
	var d devicePrograms
	defer d.close()
	var loaded []*ebpf.Program
	for i := range maxDevicePrograms + 4 {
		p, err := d.program([]DeviceRule{{Type: CharDevice, Major: 1, Minor: int64(i), Access: "r"}})
		if err != nil {
			if errors.Is(err, errors.ErrUnsupported) {
				t.Skip(err)
			}
			t.Fatal(err)
		}
		loaded = append(loaded, p)
		if len(d.progs) > maxDevicePrograms {
			t.Fatalf("%d programs kept, want at most %d", len(d.progs), maxDevicePrograms)
		}
	}
	open := 0
	for _, p := range loaded {
		if p.FD() >= 0 {
			open++
		}
	}
	if open != len(d.progs) {
		t.Errorf("%d of the loaded programs are open, %d kept: the others must be closed", open, len(d.progs))
	}
}

// Enforces says what a Create with limits would find: here the host's
// hierarchies carry pids and memory, and a V2 manager on the
// controller-less unified hierarchy of a hybrid host carries neither.
func TestEnforces(t *testing.T) {
	host, err := NewManager(Options{Parent: fmt.Sprintf("berth-enforces-%d", os.Getpid())})
	if err != nil {
		t.Fatal(err)
	}
	for _, ctrl := range []string{"pids", "memory"} {
		ok, err := host.Enforces(ctrl)
		_, err2 := host.Create("probe-"+ctrl, &Resources{PidsMax: 10, MemoryMax: 64 << 20})
		if err == nil && err2 == nil {
			if c, err := host.Open("probe-" + ctrl); err == nil {
				c.Remove(context.Background())
			}
		}
		if err != nil || ok != (err2 == nil) {
			t.Errorf("host: Enforces(%q) = %v, %v; Create with its limit: %v", ctrl, ok, err, err2)
		}
	}
	host.RemoveParent()
	if host.Mode() != Hybrid {
		return
	}
	const unified = "/sys/fs/cgroup/unified"
	v2, err := NewManager(Options{Mode: V2, UnifiedMount: unified, Parent: fmt.Sprintf("berth-enforces-v2-%d", os.Getpid())})
	if err != nil {
		t.Fatal(err)
	}
	defer v2.RemoveParent()
	for _, ctrl := range []string{"pids", "memory"} {
		if ok, err := v2.Enforces(ctrl); err != nil || ok {
			t.Errorf("v2 without controllers: Enforces(%q) = %v, %v", ctrl, ok, err)
		}
	}
}
