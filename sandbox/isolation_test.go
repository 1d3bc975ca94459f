package sandbox

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/security"
)

// Mount propagation between the host and a sandbox is private both ways,
// even through a bind-mounted directory that is a shared mount on the
// host (as / is on systemd's hosts): a mount the host makes under it after
// the start does not appear inside, and a mount made inside never appears
// on the host. The workload keeps CAP_SYS_ADMIN here so that it can
// mount at all.
func TestMountPropagationIsPrivate(t *testing.T) {
	dir := t.TempDir()
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(dir, unix.MNT_DETACH)
	if err := unix.Mount("", dir, "", unix.MS_SHARED, ""); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"from-host", "from-sandbox"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	sec := security.Default()
	sec.Capabilities = append(sec.Capabilities, "CAP_SYS_ADMIN")

	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer inR.Close()
	defer inW.Close()
	var errOut syncBuffer
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer outR.Close()
	sb := New("alpine:test", opts(func(o *Options) {
		o.Security = sec
		o.Mounts = []Mount{{Source: dir, Destination: "/data"}}
		o.Stdin, o.Stdout, o.Stderr = inR, outW, &errOut
		o.Args = []string{"/bin/sh", "-c", `mount -t tmpfs berth-inside /data/from-sandbox && touch /data/from-sandbox/inside && echo mounted
read x
if test -e /data/from-host/marker; then echo host-mount-visible; else echo host-mount-hidden; fi`}
	}))
	if err := sb.Start(context.Background()); err != nil {
		outW.Close()
		t.Fatal(err)
	}
	outW.Close()
	defer sb.Close()
	lines := bufio.NewScanner(outR)
	if !lines.Scan() || lines.Text() != "mounted" {
		t.Fatalf("the workload could not mount: %q %s", lines.Text(), errOut.String())
	}

	if _, err := os.Stat(filepath.Join(dir, "from-sandbox", "inside")); err == nil {
		t.Error("a mount made in the sandbox appears on the host")
	}
	if err := unix.Mount("berth-host", filepath.Join(dir, "from-host"), "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(filepath.Join(dir, "from-host"), unix.MNT_DETACH)
	if err := os.WriteFile(filepath.Join(dir, "from-host", "marker"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	inW.WriteString("go\n")
	if !lines.Scan() || lines.Text() != "host-mount-hidden" {
		t.Errorf("a mount the host made after the start: %q inside", lines.Text())
	}
	if res, err := sb.Wait(); err != nil || !res.Success() {
		t.Errorf("workload: %v %v", res, err)
	}
	if b, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(b), "berth-inside") {
		t.Error("the sandbox's tmpfs is in the host's mount table")
	}
}

// /dev holds exactly the nodes SECURITY.md lists, with the types, numbers
// and link targets of a runtime's usual /dev, under Default and Strict.
func TestDevListing(t *testing.T) {
	const want = `/dev/console missing
/dev/fd link /proc/self/fd
/dev/full c 1:7
/dev/mqueue d
/dev/null c 1:3
/dev/ptmx link pts/ptmx
/dev/pts d
/dev/random c 1:8
/dev/shm d
/dev/stderr link /proc/self/fd/2
/dev/stdin link /proc/self/fd/0
/dev/stdout link /proc/self/fd/1
/dev/tty c 5:0
/dev/urandom c 1:9
/dev/zero c 1:5
`
	// Each entry of /dev, sorted: its type, and its device numbers or
	// link target. console is there only with a terminal.
	script := `cd /dev && for f in * console; do
	if [ -L "$f" ]; then echo "/dev/$f link $(readlink "$f")"
	elif [ -c "$f" ]; then set -- $(stat -c '%t %T' "$f"); echo "/dev/$f c $((0x$1)):$((0x$2))"
	elif [ -b "$f" ]; then echo "/dev/$f b"
	elif [ -d "$f" ]; then echo "/dev/$f d"
	elif [ -e "$f" ]; then echo "/dev/$f other"
	else echo "/dev/$f missing"; fi
done | sort -u`
	for _, sec := range []*security.Config{security.Default(), security.Strict()} {
		res, out, errOut := run(t, "alpine:test", opts(func(o *Options) { sh(script)(o); o.Security = sec }))
		if !res.Success() || out != want {
			t.Errorf("user namespace %v: /dev is\n%s(%s), want\n%s", sec.UserNamespace != nil, out, errOut, want)
		}
	}
}
