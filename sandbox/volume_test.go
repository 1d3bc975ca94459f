package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/netplug"
	"github.com/berth-dev/berth/security"
)

// tryRun runs a sandbox and returns its output, or the error that kept it
// from starting.
func tryRun(o *Options) (stdout, stderr string, err error) {
	var out, errOut bytes.Buffer
	o.Stdout, o.Stderr = &out, &errOut
	_, err = New("alpine:test", o).Run(context.Background())
	return out.String(), errOut.String(), err
}

// hostDir returns a new directory that any user in a sandbox may enter.
func hostDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// secretDir is a host directory a sandbox must never be handed: it holds
// a file saying so.
func secretDir(t *testing.T) string {
	t.Helper()
	dir := hostDir(t)
	if err := os.WriteFile(filepath.Join(dir, "marker"), []byte("host secret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// A sandbox given a host directory plants symbolic links in it to another
// host directory; a later sandbox asked to mount them is refused, and the
// error names the link, what it says and the real path to pass instead.
func TestMountSourceLinkRefused(t *testing.T) {
	vol, secret := hostDir(t), secretDir(t)
	res, _, errOut := run(t, "alpine:test", opts(func(o *Options) {
		o.Mounts = []Mount{{Source: vol, Destination: "/vol"}}
		o.Args = []string{"sh", "-c", "ln -s " + secret + " /vol/sub && mkdir /vol/d && ln -s " + secret + " /vol/d/mid"}
	}))
	if !res.Success() {
		t.Fatalf("planting the links: %s", errOut)
	}
	for _, c := range []struct{ source, link string }{
		{filepath.Join(vol, "sub"), filepath.Join(vol, "sub")},            // the last component
		{filepath.Join(vol, "d/mid/marker"), filepath.Join(vol, "d/mid")}, // one on the way, to a file
		{vol + "/d/mid/../mid/marker", filepath.Join(vol, "d/mid")},       // cleaned first
	} {
		out, _, err := tryRun(opts(func(o *Options) {
			o.Mounts = []Mount{{Source: c.source, Destination: "/data"}}
			o.Args = []string{"sh", "-c", "cat /data/marker /data 2>/dev/null; true"}
		}))
		if strings.Contains(out, "host secret") {
			t.Fatalf("%s: the sandbox got the host directory through the link", c.source)
		}
		if !errors.Is(err, ErrMountSourceLink) {
			t.Fatalf("%s: %v, want ErrMountSourceLink", c.source, err)
		}
		resolved := secret + strings.TrimPrefix(filepath.Clean(c.source), c.link)
		for _, want := range []string{c.link + " -> " + secret, "if you trust it, pass " + resolved} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: error %q does not say %q", c.source, err, want)
			}
		}
	}
	// A pool's sandboxes are built from the same sources.
	_, err := NewPool(context.Background(), "alpine:test", opts(func(o *Options) {
		o.Mounts = []Mount{{Source: filepath.Join(vol, "sub"), Destination: "/data"}}
	}), 1)
	if !errors.Is(err, ErrMountSourceLink) {
		t.Errorf("pool: %v, want ErrMountSourceLink", err)
	}
	if left := leftBehind(t); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// A named volume's own directory is refused if it is a link; the
// storage's directory of volumes is trusted as it is configured.
func TestVolumeLinkRefused(t *testing.T) {
	secret := secretDir(t)
	dir, err := testEnv.store.Volume(context.Background(), "planted")
	if err != nil {
		t.Fatal(err)
	}
	defer testEnv.store.RemoveVolume(context.Background(), "planted")
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, dir); err != nil {
		t.Fatal(err)
	}
	out, _, err := tryRun(opts(func(o *Options) {
		o.Mounts = []Mount{{Type: "volume", Source: "planted", Destination: "/data"}}
		o.Args = []string{"cat", "/data/marker"}
	}))
	if strings.Contains(out, "host secret") || !errors.Is(err, ErrMountSourceLink) {
		t.Fatalf("volume replaced by a link: output %q, error %v", out, err)
	}
	if !strings.Contains(err.Error(), dir+" -> "+secret) {
		t.Errorf("error %q does not name the link", err)
	}

	// The volumes' directory reached through a link is fine.
	base := hostDir(t)
	real := filepath.Join(base, "real")
	if err := os.MkdirAll(filepath.Join(real, "vol"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, filepath.Join(base, "link")); err != nil {
		t.Fatal(err)
	}
	f, err := openVolumeSource(filepath.Join(base, "link", "vol"))
	if err != nil {
		t.Fatalf("volume under a linked storage directory: %v", err)
	}
	f.Close()
}

// hookNetwork is a network whose Attach runs a function: after the host
// has opened the mount sources and before the init mounts them.
type hookNetwork struct{ hook func() }

func (n hookNetwork) Attach(context.Context, string, string, *netplug.AttachOptions) (*netplug.Attachment, error) {
	n.hook()
	return &netplug.Attachment{}, nil
}

func (n hookNetwork) Detach(context.Context, string, string) error { return nil }

// A component of a bind mount's source is swapped for a link to a host
// directory after the host has checked the path: the sandbox still gets
// what was checked, since the init mounts the descriptor the host opened,
// not the path.
func TestMountSourceSwappedAfterCheck(t *testing.T) {
	vol, secret := hostDir(t), secretDir(t)
	leaf := filepath.Join(vol, "mid", "leaf")
	if err := os.MkdirAll(leaf, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(secret, "leaf"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(secret, "leaf", "marker"), []byte("host secret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(leaf, "marker"), []byte("checked\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	swapped := false
	out, errOut, err := tryRun(opts(func(o *Options) {
		o.Network = hookNetwork{hook: func() {
			mid := filepath.Join(vol, "mid")
			if err := os.Rename(mid, mid+".old"); err != nil {
				t.Error(err)
				return
			}
			if err := os.Symlink(secret, mid); err != nil {
				t.Error(err)
				return
			}
			swapped = true
		}}
		o.Mounts = []Mount{{Source: leaf, Destination: "/data"}}
		o.Args = []string{"cat", "/data/marker"}
	}))
	if err != nil || !swapped {
		t.Fatalf("swapped %v: %v (%s)", swapped, err, errOut)
	}
	if out != "checked\n" {
		t.Errorf("the sandbox got %q through the swapped path, want the checked directory's \"checked\"", out)
	}
}

// staticHelper returns a function that builds testdata/name, static so
// that it runs in any image, once for the package's tests, under
// testEnv's directory, and returns its path.
func staticHelper(name string) func() (string, error) {
	return sync.OnceValues(func() (string, error) {
		bin := filepath.Join(testEnv.dir, name)
		cmd := exec.Command("go", "build", "-o", bin, "./testdata/"+name)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("build testdata/%s: %w: %s", name, err, out)
		}
		return bin, nil
	})
}

// euidHelper builds testdata/euid.
var euidHelper = staticHelper("euid")

// setuidHelper puts a setuid-root copy of the euid helper in dir.
func setuidHelper(t *testing.T, dir string) {
	t.Helper()
	bin, err := euidHelper()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "euid")
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dst, 0o755|os.ModeSetuid); err != nil {
		t.Fatal(err)
	}
}

// hostTmpfs mounts a tmpfs at dir on the host, as a submount of a bind
// mount's source, for the rest of the test.
func hostTmpfs(t *testing.T, dir string, flags uintptr) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", flags, "size=4m,mode=0755"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
}

// A setuid-root program in a host directory gives a non-root workload no
// root through a bind mount (nosuid), on the source's submounts too,
// unless the mount opts out with "suid". The workload may gain privileges
// here (NoNewPrivileges off), so that only the mount's flag stands in the
// way.
func TestBindNosuid(t *testing.T) {
	vol := hostDir(t)
	sub := filepath.Join(vol, "sub")
	hostTmpfs(t, sub, 0)
	setuidHelper(t, vol)
	setuidHelper(t, sub)
	sec := security.Default()
	sec.NoNewPrivileges = false
	euids := func(options string) string {
		t.Helper()
		out, errOut, err := tryRun(opts(func(o *Options) {
			o.Security = sec
			o.User = "nobody"
			o.Mounts = []Mount{{Source: vol, Destination: "/data", Options: options}}
			o.Args = []string{"sh", "-c", "/data/euid; /data/sub/euid"}
		}))
		if err != nil {
			t.Fatalf("options %q: %v (%s)", options, err, errOut)
		}
		return out
	}
	if got := euids(""); got != "65534\n65534\n" {
		t.Errorf("setuid-root program by default: effective uids %q, want 65534 for both", got)
	}
	if got := euids("suid"); got != "0\n0\n" {
		t.Errorf("setuid-root program with suid: effective uids %q, want 0 for both", got)
	}
}

// A device node in a host directory cannot be opened through a bind mount
// (nodev), under Default and Strict and from a pool, unless the mount opts
// out with "dev". The node is /dev/null's, which the sandbox's own /dev
// has, so that only the mount's flag stands in the way.
func TestBindNodev(t *testing.T) {
	vol := hostDir(t)
	if err := unix.Mknod(filepath.Join(vol, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(vol, "null"), 0o666); err != nil {
		t.Fatal(err)
	}
	const script = "echo x > /data/null && echo opened || echo refused"
	for _, c := range []struct {
		name    string
		sec     *security.Config
		options string
		want    string
	}{
		{"default", nil, "", "refused\n"},
		{"default, dev", nil, "dev", "opened\n"},
		{"strict", security.Strict(), "", "refused\n"},
		{"strict, dev", security.Strict(), "dev", "opened\n"},
	} {
		out, errOut, err := tryRun(opts(func(o *Options) {
			o.Security = c.sec
			o.Mounts = []Mount{{Source: vol, Destination: "/data", Options: c.options}}
			o.Args = []string{"sh", "-c", script}
		}))
		if err != nil || out != c.want {
			t.Errorf("%s: %q %v (%s), want %q", c.name, out, err, errOut, c.want)
		}
		if c.want == "refused\n" && !strings.Contains(errOut, "Permission denied") {
			t.Errorf("%s: refused with %q, want EACCES", c.name, errOut)
		}
	}

	p, err := NewPool(context.Background(), "alpine:test", opts(func(o *Options) {
		o.Mounts = []Mount{{Source: vol, Destination: "/data"}}
	}), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var out bytes.Buffer
	if _, err := p.New(&Options{Args: []string{"sh", "-c", script}, Stdout: &out}).Run(context.Background()); err != nil || out.String() != "refused\n" {
		t.Errorf("pool: %q %v", out.String(), err)
	}
}

// mountOptions returns the per-mount options of the mount at point, from
// the text of a mountinfo file.
func mountOptions(mountinfo, point string) []string {
	for _, l := range strings.Split(mountinfo, "\n") {
		if f := strings.Fields(l); len(f) > 5 && f[4] == point {
			return strings.Split(f[5], ",")
		}
	}
	return nil
}

// A read-only bind is read-only on the source's submounts too, and
// opting out of nosuid or nodev keeps what the source's own mounts have.
func TestBindReadonlyRecursive(t *testing.T) {
	vol := hostDir(t)
	sub := filepath.Join(vol, "sub")
	hostTmpfs(t, sub, unix.MS_NOSUID|unix.MS_NOEXEC)
	out, errOut, err := tryRun(opts(func(o *Options) {
		o.Mounts = []Mount{{Source: vol, Destination: "/data", ReadOnly: true, Options: "suid,dev"}}
		o.Args = []string{"sh", "-c", `
			touch /data/x 2>/dev/null && echo "wrote the source"
			touch /data/sub/x 2>/dev/null && echo "wrote its submount"
			cat /proc/self/mountinfo`}
	}))
	if err != nil {
		t.Fatalf("%v (%s)", err, errOut)
	}
	if strings.Contains(out, "wrote") {
		t.Errorf("read-only bind written:\n%s", out)
	}
	top, below := mountOptions(out, "/data"), mountOptions(out, "/data/sub")
	if !slices.Contains(top, "ro") || slices.Contains(top, "nosuid") || slices.Contains(top, "nodev") {
		t.Errorf("/data has %v, want ro without nosuid and nodev", top)
	}
	for _, want := range []string{"ro", "nosuid", "noexec"} {
		if !slices.Contains(below, want) {
			t.Errorf("/data/sub has %v, want %s among them", below, want)
		}
	}
}

// A file is bound as well as a directory: read-write, its writes reach
// the host; read-only, it refuses them. Both are nosuid,nodev.
func TestFileBind(t *testing.T) {
	dir := hostDir(t)
	rw, ro := filepath.Join(dir, "rw.conf"), filepath.Join(dir, "ro.conf")
	os.WriteFile(rw, []byte("rw\n"), 0o644)
	os.WriteFile(ro, []byte("ro\n"), 0o644)
	out, errOut, err := tryRun(opts(func(o *Options) {
		o.Mounts = []Mount{
			{Source: rw, Destination: "/etc/rw.conf"},
			{Source: ro, Destination: "/etc/new/ro.conf", ReadOnly: true},
		}
		o.Args = []string{"sh", "-c", `
			cat /etc/rw.conf /etc/new/ro.conf
			echo more >> /etc/rw.conf
			echo more >> /etc/new/ro.conf 2>/dev/null && echo "wrote the read-only file"
			echo ---
			cat /proc/self/mountinfo`}
	}))
	if err != nil {
		t.Fatalf("%v (%s)", err, errOut)
	}
	got, mountinfo, _ := strings.Cut(out, "---\n")
	if got != "rw\nro\n" {
		t.Errorf("got %q, want the two files' contents", got)
	}
	for point, want := range map[string][]string{
		"/etc/rw.conf":     {"rw", "nosuid", "nodev"},
		"/etc/new/ro.conf": {"ro", "nosuid", "nodev"},
	} {
		have := mountOptions(mountinfo, point)
		for _, w := range want {
			if !slices.Contains(have, w) {
				t.Errorf("%s has %v, want %s among them", point, have, w)
			}
		}
	}
	if b, _ := os.ReadFile(rw); string(b) != "rw\nmore\n" {
		t.Errorf("read-write file on the host: %q", b)
	}
	if b, _ := os.ReadFile(ro); string(b) != "ro\n" {
		t.Errorf("read-only file on the host: %q", b)
	}
}

func TestBindOptionsRefused(t *testing.T) {
	_, _, err := tryRun(opts(func(o *Options) {
		o.Mounts = []Mount{{Source: t.TempDir(), Destination: "/data", Options: "nosuid,bogus"}}
		o.Args = []string{"true"}
	}))
	if err == nil || !strings.Contains(err.Error(), `option "bogus"`) {
		t.Errorf("bad option: %v", err)
	}
}

// Bind sources travel as descriptors after the workload's extra files and
// a joined network namespace: each lands where it should, in a sandbox of
// its own and in a pool's.
func TestBindSourcesBesideOtherDescriptors(t *testing.T) {
	holder := New("alpine:test", opts(func(o *Options) { o.Args = []string{"sleep", "100"} }))
	if err := holder.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	a, b := hostDir(t), hostDir(t)
	os.WriteFile(filepath.Join(a, "f"), []byte("a\n"), 0o644)
	os.WriteFile(filepath.Join(b, "f"), []byte("b\n"), 0o644)
	files := func() []*os.File {
		var out []*os.File
		for _, s := range []string{"three\n", "four\n"} {
			f, err := os.CreateTemp(t.TempDir(), "extra")
			if err != nil {
				t.Fatal(err)
			}
			f.WriteString(s)
			f.Seek(0, 0)
			t.Cleanup(func() { f.Close() })
			out = append(out, f)
		}
		return out
	}
	const want = "a\nb\nthree\nfour\n"
	mounts := []Mount{{Source: a, Destination: "/a"}, {Source: b, Destination: "/b"}}
	out, errOut, err := tryRun(opts(func(o *Options) {
		o.JoinNetwork = holder.NetworkNamespace()
		o.ExtraFiles = files()
		o.Mounts = mounts
		o.Args = []string{"sh", "-c", "cat /a/f /b/f; cat <&3; cat <&4"}
	}))
	if err != nil || out != want {
		t.Errorf("sandbox: %q %v (%s), want %q", out, err, errOut, want)
	}
	p, err := NewPool(context.Background(), "alpine:test", opts(func(o *Options) {
		o.JoinNetwork = holder.NetworkNamespace()
		o.Mounts = mounts
	}), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var buf bytes.Buffer
	_, err = p.New(&Options{ExtraFiles: files(), Stdout: &buf, Args: []string{"sh", "-c", "cat /a/f /b/f; cat <&3; cat <&4"}}).Run(context.Background())
	if err != nil || buf.String() != want {
		t.Errorf("pool: %q %v, want %q", buf.String(), err, want)
	}
}

// BenchmarkStartExitBind is BenchmarkStartExit's alpine case with bind
// mounts of a directory and a file: what resolving, cloning and attaching
// their sources costs shows against that. Run with -benchtime=200x.
func BenchmarkStartExitBind(b *testing.B) {
	dir := b.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		b.Fatal(err)
	}
	timeStartExit(b, 0, func() *Sandbox {
		return New("alpine:test", opts(func(o *Options) {
			o.Args = []string{"true"}
			o.Mounts = []Mount{{Source: dir, Destination: "/data"}, {Source: file, Destination: "/etc/file", ReadOnly: true}}
		}))
	})
}

// BenchmarkOpenBindSource measures the host's part of a bind mount:
// resolving its source without links and cloning its mount tree.
func BenchmarkOpenBindSource(b *testing.B) {
	dir := b.TempDir()
	for b.Loop() {
		f, err := openBindSource(dir)
		if err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
}

// openOf counts this process's descriptors of the file at path. A
// detached mount's descriptor names no host path, so they are compared by
// device and inode.
func openOf(t *testing.T, path string) int {
	t.Helper()
	var want unix.Stat_t
	if err := unix.Stat(path, &want); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		var st unix.Stat_t
		if err := unix.Stat("/proc/self/fd/"+e.Name(), &st); err == nil && st.Dev == want.Dev && st.Ino == want.Ino {
			n++
		}
	}
	return n
}

// The host keeps no descriptor of a mount's source once the sandbox has
// started, or failed to: not when a later mount's source is refused, nor
// when the sandbox is from a pool.
func TestMountSourcesClosed(t *testing.T) {
	dir := hostDir(t)
	good := filepath.Join(dir, "good")
	os.Mkdir(good, 0o755)
	os.Symlink(good, filepath.Join(dir, "link"))
	sb := New("alpine:test", opts(func(o *Options) {
		o.Mounts = []Mount{{Source: good, Destination: "/a"}}
		o.Args = []string{"sleep", "100"}
	}))
	if err := sb.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := openOf(t, good); n != 0 {
		t.Errorf("%d descriptors of the source open while the sandbox runs", n)
	}
	sb.Close()
	_, _, err := tryRun(opts(func(o *Options) {
		o.Mounts = []Mount{{Source: good, Destination: "/a"}, {Source: filepath.Join(dir, "link"), Destination: "/b"}}
		o.Args = []string{"true"}
	}))
	if !errors.Is(err, ErrMountSourceLink) {
		t.Fatalf("second mount through a link: %v", err)
	}
	if n := openOf(t, good); n != 0 {
		t.Errorf("%d descriptors of the first source open after a failed start", n)
	}
	p, err := NewPool(context.Background(), "alpine:test", opts(func(o *Options) {
		o.Mounts = []Mount{{Source: good, Destination: "/a"}}
	}), 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Ready(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := openOf(t, good); n != 0 {
		t.Errorf("%d descriptors of the source open with a pool's sandboxes waiting", n)
	}
	p.Close()
}
