package sandbox

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/security"
)

// hostileDevices are devices no sandbox may reach: a loop device (a disk
// of the host is reached the same way), the kernel log, KVM, the console,
// a virtual terminal and userfaultfd (which seccomp refuses as a system
// call). The test image ships a node of each in /nodes,
// as a hostile image would, which needs no CAP_MKNOD at all.
var hostileDevices = []struct {
	name         string
	typ          byte
	major, minor int64
}{
	{"loop0", 'b', 7, 0},
	{"kmsg", 'c', 1, 11},
	{"kvm", 'c', 10, 232},
	{"console", 'c', 5, 1},
	{"tty1", 'c', 4, 1},
	{"userfaultfd", 'c', 10, 257},
}

// devNodesImage is alpine with hostileDevices' nodes, mode 0666, in
// /nodes: imported once, on first use.
var devNodesImage = sync.OnceValue(func() error {
	nodes := []*tar.Header{{Typeflag: tar.TypeDir, Name: "nodes/", Mode: 0o755}}
	for _, d := range hostileDevices {
		flag := byte(tar.TypeChar)
		if d.typ == 'b' {
			flag = tar.TypeBlock
		}
		nodes = append(nodes, &tar.Header{Typeflag: flag, Name: "nodes/" + d.name, Mode: 0o666, Devmajor: d.major, Devminor: d.minor})
	}
	return testenv.ImportAlpineWith(context.Background(), testEnv.store, "alpine-devnodes:test", nodes...)
})

// deviceProbe is what the allowlist tests run inside a sandbox: each line
// it prints is "WHAT ok" or "WHAT: ERROR". Opens happen in a subshell,
// which leads no session, so a terminal never becomes anyone's
// controlling one.
func deviceProbe(extra ...string) string {
	lines := []string{`try() { if err=$( (eval "$2") 2>&1 ); then echo "$1 ok"; else echo "$1: $err"; fi; }`}
	for _, d := range hostileDevices {
		lines = append(lines,
			fmt.Sprintf(`try "open %s" "exec 3</nodes/%s"`, d.name, d.name),
			fmt.Sprintf(`try "mknod %s" "mknod /tmp/%s %c %d %d"`, d.name, d.name, d.typ, d.major, d.minor))
	}
	lines = append(lines,
		`try "write null" "echo x >/dev/null"`,
		`try "read zero" "test \"\$(head -c 4 /dev/zero | wc -c)\" = 4"`,
		`try "read full" "head -c 4 /dev/full >/dev/null"`,
		`try "read random" "head -c 4 /dev/random >/dev/null"`,
		`try "read urandom" "head -c 4 /dev/urandom >/dev/null"`,
		`try "open ptmx" "exec 3<>/dev/ptmx"`,
	)
	return strings.Join(append(lines, extra...), "\n")
}

// checkDeviceProbe checks the probe's output: each hostile device refused
// with EPERM, every other line ok except those in want, which map what
// was tried to the error it must end with.
func checkDeviceProbe(t *testing.T, out string, want map[string]string) {
	t.Helper()
	got := make(map[string]string)
	for line := range strings.Lines(strings.TrimSpace(out)) {
		line = strings.TrimSpace(line)
		if what, ok := strings.CutSuffix(line, " ok"); ok {
			got[what] = "ok"
		} else if what, err, ok := strings.Cut(line, ": "); ok {
			got[what] = err
		} else {
			t.Errorf("probe line %q", line)
		}
	}
	expect := make(map[string]string)
	for _, d := range hostileDevices {
		expect["open "+d.name] = "Operation not permitted"
		expect["mknod "+d.name] = "Operation not permitted"
	}
	for _, what := range []string{"write null", "read zero", "read full", "read random", "read urandom", "open ptmx"} {
		expect[what] = "ok"
	}
	for what, e := range want {
		expect[what] = e
	}
	for what, e := range expect {
		g, ok := got[what]
		switch {
		case !ok:
			t.Errorf("%s: not in the probe's output", what)
		case e == "ok" && g != "ok":
			t.Errorf("%s: failed, want it to work: %s", what, g)
		case e != "ok" && !strings.HasSuffix(g, e):
			t.Errorf("%s: %s, want %q", what, g, e)
		}
	}
	for what := range got {
		if _, ok := expect[what]; !ok {
			t.Errorf("unexpected probe line for %q", what)
		}
	}
}

// withMknod returns sec with CAP_MKNOD, if it has capabilities at all: the
// allowlist must hold with it kept.
func withMknod(sec *security.Config) *security.Config {
	if len(sec.Capabilities) > 0 && !slices.Contains(sec.Capabilities, "CAP_MKNOD") {
		sec.Capabilities = append(sec.Capabilities, "CAP_MKNOD")
	}
	return sec
}

// Every preset gets the allowlist: a sandbox reaches no device but its
// /dev's and those it is given, even as root with CAP_MKNOD, and even
// through nodes its image ships. It is given the host's /dev/full as
// /dev/xfull (made with mknod, or bound from the host in a user
// namespace), a TUN node (10:200, a device no sandbox has otherwise) as
// /dev/net/tun for reading and writing, and for reading only a node of a
// number no driver has (a permitted open fails with ENXIO, a refused one
// with EPERM). The sandbox may mknod neither of the last two, so both are
// bound from the host.
func TestDeviceAllowlist(t *testing.T) {
	if err := devNodesImage(); err != nil {
		t.Fatal(err)
	}
	tun := filepath.Join(searchableTempDir(t), "tun")
	if err := unix.Mknod(tun, unix.S_IFCHR, int(unix.Mkdev(10, 200))); err != nil {
		t.Fatal(err)
	}
	nodev := filepath.Join(filepath.Dir(tun), "nodev")
	if err := unix.Mknod(nodev, unix.S_IFCHR, int(unix.Mkdev(noDriverMajor, 0))); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{tun, nodev} {
		if err := os.Chmod(f, 0o666); err != nil {
			t.Fatal(err)
		}
	}
	devices := []Device{
		{Source: "/dev/full", Destination: "/dev/xfull"},
		{Source: tun, Destination: "/dev/net/tun", Access: "rw"},
		{Source: nodev, Destination: "/dev/ro", Access: "r"},
	}
	probe := deviceProbe(
		`try "xfull is full" "ls -l /dev/xfull | grep -q '1, *7'"`,
		`try "read xfull" "test \"\$(head -c 4 /dev/xfull | wc -c)\" = 4"`,
		`try "write xfull" "echo x >/dev/xfull"`,
		`try "open tun" "exec 3<>/dev/net/tun"`,
		`try "read ro" "exec 3</dev/ro"`,
		`try "write ro" "exec 3>/dev/ro"`,
		`try "mknod tun" "mknod /tmp/tun c 10 200"`,
		`try "mknod null" "mknod /tmp/mynull c 1 3 && echo x >/tmp/mynull"`,
	)
	want := map[string]string{
		"xfull is full": "ok",
		"read xfull":    "ok",
		// /dev/full refuses writes with ENOSPC once they get to it.
		"write xfull": "No space left on device",
		"open tun":    "ok",
		"read ro":     "No such device or address",
		"write ro":    "Operation not permitted",
		"mknod tun":   "Operation not permitted",
		"mknod null":  "ok",
	}
	for _, preset := range []struct {
		name string
		sec  *security.Config
		want map[string]string
	}{
		{"default", withMknod(security.Default()), nil},
		// A user namespace refuses mknod whatever the cgroup allows.
		{"strict", security.Strict(), map[string]string{"mknod null": "Operation not permitted"}},
		{"unconfined", withMknod(security.Unconfined()), nil},
	} {
		t.Run(preset.name, func(t *testing.T) {
			res, out, errOut := run(t, "alpine-devnodes:test", opts(func(o *Options) {
				o.Security = preset.sec
				o.Devices = devices
				o.Args = []string{"/bin/sh", "-c", probe}
			}))
			t.Logf("probe:\n%s", out)
			if !res.Success() {
				t.Fatalf("probe: %+v, stderr %q", res, errOut)
			}
			w := maps.Clone(want)
			maps.Copy(w, preset.want)
			checkDeviceProbe(t, out, w)
		})
	}
}

// The allowlist holds on each cgroup layout by itself: v1's devices
// controller alone, a BPF program on a cgroup2 hierarchy alone (a mount
// of the test's own, in V2 mode), and both at once on the host's Hybrid
// layout.
func TestDeviceAllowlistLayouts(t *testing.T) {
	if err := devNodesImage(); err != nil {
		t.Fatal(err)
	}
	for _, layout := range []struct {
		name string
		opts cgroup.Options
	}{{"host", cgroup.Options{}}, {"v1", cgroup.Options{Mode: cgroup.V1}}, {"v2mount", cgroup.Options{Mode: cgroup.V2}}} {
		t.Run(layout.name, func(t *testing.T) {
			o := layout.opts
			o.Parent = fmt.Sprintf("berth-test-%d-devices-%s", os.Getpid(), layout.name)
			if o.Mode == cgroup.V2 {
				o.UnifiedMount = privateCgroup2(t)
			}
			cgm, err := cgroup.NewManager(o)
			if errors.Is(err, errors.ErrUnsupported) {
				t.Skip(err)
			}
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := cgm.RemoveParent(); err != nil {
					t.Error(err)
				}
			})
			if cgm.Mode() != layout.opts.Mode && layout.opts.Mode != cgroup.Auto {
				t.Fatalf("mode %v", cgm.Mode())
			}
			res, out, errOut := run(t, "alpine-devnodes:test", opts(func(o *Options) {
				o.Cgroups = cgm
				o.Security = withMknod(security.Default())
				o.Args = []string{"/bin/sh", "-c", deviceProbe()}
			}))
			if !res.Success() {
				t.Fatalf("probe: %+v, stderr %q", res, errOut)
			}
			checkDeviceProbe(t, out, nil)
		})
	}
}

// privateCgroup2 mounts the cgroup2 hierarchy on a directory of the
// test's own and unmounts it when the test ends.
func privateCgroup2(t *testing.T) string {
	t.Helper()
	// Not t.TempDir: its cleanup removes recursively, which on a mount
	// left behind would rmdir every empty cgroup of the host.
	dir, err := os.MkdirTemp("", "berth-cgroup2-")
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("none", dir, "cgroup2", 0, ""); err != nil {
		os.Remove(dir)
		t.Skipf("cannot mount cgroup2: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
			return
		}
		os.Remove(dir)
	})
	return dir
}

// noDriverMajor is a character device major no driver has taken.
const noDriverMajor = 4000

// A pool's sandboxes get the allowlist and their devices too, built
// ahead of their workloads; devices are the pool's to set.
func TestPoolDevices(t *testing.T) {
	if err := devNodesImage(); err != nil {
		t.Fatal(err)
	}
	p, err := NewPool(context.Background(), "alpine-devnodes:test", opts(func(o *Options) {
		o.Security = withMknod(security.Default())
		o.Devices = []Device{{Source: "/dev/full", Destination: "/dev/xfull"}}
	}), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var out, errOut strings.Builder
	res, err := p.New(&Options{
		Args:   []string{"/bin/sh", "-c", deviceProbe(`try "write xfull" "echo x >/dev/xfull"`, `try "mknod null" "mknod /tmp/n c 1 3"`)},
		Stdout: &out, Stderr: &errOut,
	}).Run(context.Background())
	if err != nil || !res.Success() {
		t.Fatalf("%+v %v, stderr %q", res, err, errOut.String())
	}
	checkDeviceProbe(t, out.String(), map[string]string{"write xfull": "No space left on device", "mknod null": "ok"})

	_, err = p.New(&Options{Devices: []Device{{Source: "/dev/full"}}}).Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "Devices") {
		t.Errorf("a pool's sandbox with its own Devices: %v", err)
	}
}

// Bad devices are refused before anything of the sandbox is made.
func TestDeviceOptionsInvalid(t *testing.T) {
	for _, tc := range []struct {
		name string
		devs []Device
		msg  string
	}{
		{"relative source", []Device{{Source: "dev/full"}}, "not an absolute path"},
		{"no source", []Device{{Destination: "/dev/x"}}, "no source"},
		{"missing", []Device{{Source: "/dev/no-such-device"}}, "no such file"},
		{"not a device", []Device{{Source: "/etc/hostname", Destination: "/dev/x"}}, "not a character or block device"},
		{"outside /dev", []Device{{Source: "/dev/full", Destination: "/tmp/full"}}, "not under /dev"},
		{"source outside /dev", []Device{{Source: "/tmp/full"}}, "not under /dev"},
		{"over /dev/null", []Device{{Source: "/dev/full", Destination: "/dev/null"}}, "every sandbox's /dev has its own /dev/null"},
		{"under /dev/pts", []Device{{Source: "/dev/full", Destination: "/dev/pts/9"}}, "/dev/pts"},
		{"/dev itself", []Device{{Source: "/dev/full", Destination: "/dev"}}, "not under /dev"},
		{"bad access", []Device{{Source: "/dev/full", Destination: "/dev/x", Access: "rwx"}}, `'x' is not r, w or m`},
		{"access twice", []Device{{Source: "/dev/full", Destination: "/dev/x", Access: "rr"}}, `'r' twice`},
		{"same destination", []Device{{Source: "/dev/full", Destination: "/dev/x"}, {Source: "/dev/zero", Destination: "/dev/./x"}}, "two devices at /dev/x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New("alpine:test", opts(func(o *Options) { o.Devices = tc.devs })).Run(context.Background())
			if !errors.Is(err, ErrInvalidDevice) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("Run = %v, want ErrInvalidDevice saying %q", err, tc.msg)
			}
		})
	}
	if left := leftBehind(t); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// Rules of the caller's own in Resources.Devices are allowed beside the
// sandbox's: here mknod and read of a device no driver has, whose
// permitted open fails with ENXIO rather than EPERM.
func TestResourcesDevicesAdded(t *testing.T) {
	script := fmt.Sprintf(`mknod /tmp/n c %d 0 && head -c 1 /tmp/n; echo x >/dev/null && echo null works`, noDriverMajor)
	res, out, errOut := run(t, "alpine:test", opts(func(o *Options) {
		o.Security = withMknod(security.Default())
		o.Resources = &cgroup.Resources{Devices: []cgroup.DeviceRule{
			{Type: cgroup.CharDevice, Major: noDriverMajor, Minor: 0, Access: "rm"},
		}}
		o.Args = []string{"/bin/sh", "-c", script}
	}))
	if !res.Success() || out != "null works\n" || !strings.Contains(errOut, "No such device or address") {
		t.Errorf("stdout %q, stderr %q (%+v)", out, errOut, res)
	}
}

// A process Exec adds is held to the same allowlist.
func TestExecDeviceAllowlist(t *testing.T) {
	if err := devNodesImage(); err != nil {
		t.Fatal(err)
	}
	sb := New("alpine-devnodes:test", opts(func(o *Options) {
		o.Security = withMknod(security.Default())
		o.Args = []string{"sleep", "100"}
	}))
	if err := sb.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	var out, errOut strings.Builder
	res, err := sb.Exec(context.Background(), &ExecOptions{
		Args:   []string{"/bin/sh", "-c", deviceProbe()},
		Stdout: &out, Stderr: &errOut,
	})
	if err != nil || !res.Success() {
		t.Fatalf("%+v %v, stderr %q", res, err, errOut.String())
	}
	checkDeviceProbe(t, out.String(), nil)
}
