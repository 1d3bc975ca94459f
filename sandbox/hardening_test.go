package sandbox

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/sandbox/internal/nsinit"
	"github.com/berth-dev/berth/security"
)

// Nothing of the host's reaches the workload: not a descriptor the host
// program leaked (runc's CVE-2024-21626 leaked one), not its working
// directory.
func TestNoDescriptorsLeak(t *testing.T) {
	// A descriptor the embedding program forgot to mark close-on-exec.
	fd, err := syscall.Open(t.TempDir(), syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	res, out, _ := run(t, "alpine:test", opts(sh("ls /proc/self/fd; readlink /proc/self/cwd; readlink /proc/1/cwd 2>/dev/null || echo hidden")))
	fds := strings.Fields(out)
	// 0, 1, 2, and the one ls reads /proc/self/fd through; then the two
	// working directories.
	if !res.Success() || len(fds) != 6 || strings.Join(fds[:4], " ") != "0 1 2 3" || fds[4] != "/" {
		t.Errorf("the workload sees descriptors and cwd %q", out)
	}
	// PID 1's entries are closed to the workload: it is not dumpable,
	// and holds capabilities the workload lacks. Whatever its cwd, "/"
	// included, reading it is a failure.
	if len(fds) == 6 && fds[5] != "hidden" {
		t.Errorf("PID 1's cwd is readable: %q", fds[5])
	}
}

// A sandbox's PID 1, which lives as long as the sandbox, holds nothing of
// the host's but what berth passed it: not a descriptor the host leaked
// (a pipe's write end there would keep its reader waiting), not the
// runtime's executable it was started through. With and without a user
// namespace, which start differently.
func TestInitHoldsNoHostDescriptors(t *testing.T) {
	leaked := filepath.Join(t.TempDir(), "leaked")
	low, err := syscall.Open(leaked, syscall.O_RDWR|syscall.O_CREAT, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	// Above the files the init gets, which would replace a low one.
	fd, err := unix.FcntlInt(uintptr(low), unix.F_DUPFD, 300)
	syscall.Close(low)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	self, err := nsinit.SelfExe()
	if err != nil {
		t.Fatal(err)
	}
	var exe syscall.Stat_t
	if err := syscall.Fstat(int(self.Fd()), &exe); err != nil {
		t.Fatal(err)
	}
	for _, sec := range []*security.Config{security.Default(), security.Strict()} {
		sb := New("alpine:test", opts(func(o *Options) { o.Args = []string{"sleep", "60"}; o.Security = sec }))
		if err := sb.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		dir := fmt.Sprintf("/proc/%d/fd", sb.proc.Pid)
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			var st syscall.Stat_t
			if err := syscall.Stat(filepath.Join(dir, e.Name()), &st); err != nil {
				continue
			}
			link, _ := os.Readlink(filepath.Join(dir, e.Name()))
			if st.Dev == exe.Dev && st.Ino == exe.Ino {
				t.Errorf("user namespace %v: PID 1 holds the runtime's executable at fd %s", sec.UserNamespace != nil, e.Name())
			}
			if link == leaked {
				t.Errorf("user namespace %v: PID 1 holds the host's leaked descriptor at fd %s", sec.UserNamespace != nil, e.Name())
			}
		}
		sb.Kill()
		sb.Wait()
		sb.Close()
	}
}

// The workload, root in the sandbox with the default capabilities, cannot
// get at the runtime's executable through PID 1 (runc's CVE-2019-5736).
func TestCannotReachRuntimeThroughProc(t *testing.T) {
	exe, _ := os.Executable()
	before, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	res, out, _ := run(t, "alpine:test", opts(sh(`
		for p in /proc/1/exe /proc/1/root/proc/1/exe; do
			if echo overwritten > $p 2>/dev/null; then echo "wrote $p"; fi
			if cat $p > /dev/null 2>&1; then echo "read $p"; fi
		done
		ls -l /proc/1/exe 2>&1 | grep -q 'Permission denied' && echo "exe link hidden"
		echo done`)))
	if !res.Success() || strings.TrimSpace(out) != "exe link hidden\ndone" {
		t.Errorf("the workload got at PID 1's executable: %q", out)
	}
	after, _ := os.ReadFile(exe)
	if string(after) != string(before) {
		t.Fatal("the test binary changed")
	}
}

func TestDefaultHardening(t *testing.T) {
	res, out, _ := run(t, "alpine:test", opts(sh(`
		grep -E '^(CapEff|CapBnd|NoNewPrivs):' /proc/self/status
		# Masked paths the kernel has read as empty: what a read gives, or
		# its error, is counted, so that a path that is not masked but
		# cannot be read does not count as empty.
		for p in /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug /proc/acpi /proc/scsi /sys/firmware; do
			[ -e $p ] || continue
			if [ -d $p ]; then c=$(ls -A $p 2>&1) || c="ls failed: $c"; else c=$(head -c 1 $p 2>&1) || c="read failed: $c"; fi
			echo "$p ${#c}"
		done
		echo b > /proc/sysrq-trigger 2>/dev/null && echo "sysrq writable"
		echo 1 > /proc/sys/kernel/panic 2>/dev/null && echo "proc/sys writable"
		touch /sys/x 2>/dev/null && echo "sys writable"
		echo end`)))
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if !res.Success() || len(lines) < 6 || strings.Join(lines[:3], "\n") != "CapEff:\t00000000a00405fb\nCapBnd:\t00000000a00405fb\nNoNewPrivs:\t1" || lines[len(lines)-1] != "end" {
		t.Fatalf("got\n%s", out)
	}
	for _, l := range lines[3 : len(lines)-1] {
		if !strings.HasSuffix(l, " 0") {
			t.Errorf("not masked or writable: %s", l)
		}
	}
}

func TestReadonlyRootfsAndMounts(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "in"), []byte("from host\n"), 0o644)
	res, out, _ := run(t, "alpine:test", opts(func(o *Options) {
		o.ReadonlyRootfs = true
		o.Mounts = []Mount{
			{Source: dir, Destination: "/ro", ReadOnly: true},
			{Source: dir, Destination: "/rw"},
			{Type: "tmpfs", Destination: "/tmp", Options: "size=1m"},
			{Type: "volume", Source: "testvol", Destination: "/vol"},
		}
		o.Args = []string{"/bin/sh", "-c", `
			touch /etc/x 2>/dev/null && echo "rootfs writable"
			cat /ro/in
			echo x > /ro/y 2>/dev/null && echo "ro mount writable"
			echo out > /rw/out
			echo t > /tmp/t && cat /tmp/t
			echo v >> /vol/v; cat /vol/v
			echo end`}
	}))
	if !res.Success() || out != "from host\nt\nv\nend\n" {
		t.Errorf("got %q", out)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "out")); string(b) != "out\n" {
		t.Errorf("rw bind: %q", b)
	}
	// The volume outlives the sandbox.
	_, out, _ = run(t, "alpine:test", opts(func(o *Options) {
		o.Mounts = []Mount{{Type: "volume", Source: "testvol", Destination: "/vol"}}
		o.Args = []string{"cat", "/vol/v"}
	}))
	if out != "v\n" {
		t.Errorf("volume after the sandbox: %q", out)
	}
	// A symlink in the image cannot carry a mount out of the rootfs.
	_, out, _ = run(t, "alpine:test", opts(func(o *Options) {
		o.Mounts = []Mount{{Type: "tmpfs", Destination: "/etc/periodic/escape"}}
		o.Args = []string{"sh", "-c", "ls -d /etc/periodic/escape"}
	}))
	if strings.TrimSpace(out) != "/etc/periodic/escape" {
		t.Errorf("mount under a directory of the image: %q", out)
	}
}

func TestTerminal(t *testing.T) {
	var out syncBuffer
	sb := New("alpine:test", opts(func(o *Options) {
		o.TTY = true
		o.Stdout = &out
		o.Args = []string{"/bin/sh", "-c", "tty; sleep 0.3; stty size; echo to-stderr >&2"}
	}))
	if err := sb.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := sb.ResizeTTY(30, 90); err != nil {
		t.Fatal(err)
	}
	res, err := sb.Wait()
	if err != nil || !res.Success() {
		t.Fatalf("%+v %v", res, err)
	}
	if got := strings.ReplaceAll(out.String(), "\r", ""); got != "/dev/pts/0\n30 90\nto-stderr\n" {
		t.Errorf("terminal output %q", got)
	}
}

// Starting a sandbox that fails half-way leaves nothing behind.
func TestFailedStartLeavesNothing(t *testing.T) {
	_, err := New("alpine:test", opts(func(o *Options) {
		o.Mounts = []Mount{{Source: "/nonexistent/source", Destination: "/x"}}
	})).Run(context.Background())
	if err == nil {
		t.Fatal("a mount of a missing source was accepted")
	}
	_, err = New("alpine:test", opts(func(o *Options) {
		o.Args = []string{"/no/such/binary"}
	})).Run(context.Background())
	if err == nil {
		t.Fatal("a missing binary started")
	}
	if left := leftBehind(t); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}
