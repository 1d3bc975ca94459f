package plugin_test

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/layerfs"
	"github.com/berth-dev/berth/plugin"
	"github.com/berth-dev/berth/plugin/plugintest"
	"github.com/berth-dev/berth/sandbox"
	"github.com/berth-dev/berth/security"
)

// storageEnv is what a storage plugin test works in: a directory the
// namespace's root may search (as berth's real ones), a store holding
// Alpine, the test plugin built beside its root, and the mount directory.
type storageEnv struct {
	dir      string
	store    *layerfs.Store
	img      *layerfs.Image
	bin      string // the test plugin
	root     string // its root
	mountDir string
}

func newStorageEnv(t testing.TB) *storageEnv {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("storage plugin tests mount: they need root")
	}
	dir, err := os.MkdirTemp("", "berth-plugin-storage-")
	if err != nil {
		t.Fatal(err)
	}
	e := &storageEnv{dir: dir, mountDir: filepath.Join(dir, "mnt")}
	t.Cleanup(func() {
		// Whatever a failed test left mounted goes before the files, so
		// that removing them never reaches through a mount.
		if n := e.unmountAll(); n > 0 {
			t.Errorf("%d mounts were left under %s", n, dir)
		}
		os.RemoveAll(dir)
	})
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	if e.store, err = layerfs.Open(filepath.Join(dir, "store"), nil); err != nil {
		t.Fatal(err)
	}
	if e.img, err = e.store.Import(context.Background(), filepath.Join("..", "..", "shared", "images", testenv.Alpine), &layerfs.ImportOptions{Name: "alpine:test"}); err != nil {
		t.Fatal(err)
	}
	e.bin = filepath.Join(dir, "bin", "teststorage")
	e.root = filepath.Join(dir, "bin", "root")
	plugin.TestBuild(t, "./internal/teststorage", e.bin)
	return e
}

// open opens the test plugin with settings.
func (e *storageEnv) open(t testing.TB, settings map[string]string) *plugin.Storage {
	t.Helper()
	s, err := plugin.OpenStorage(context.Background(), e.bin, &plugin.Options{Store: e.store, MountDir: e.mountDir, Settings: settings})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// mounts lists the mount points under the test's directory.
func (e *storageEnv) mounts() []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		panic(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], e.dir+"/") {
			out = append(out, fields[4])
		}
	}
	return out
}

func (e *storageEnv) unmountAll() int {
	n := 0
	for range 10 {
		ms := e.mounts()
		if len(ms) == 0 {
			break
		}
		for i := len(ms) - 1; i >= 0; i-- {
			unix.Unmount(ms[i], unix.MNT_DETACH)
			n++
		}
	}
	return n
}

// checkClean fails t if anything is mounted under the test's directory or
// left of key in berth's mount directory or the plugin's root.
func (e *storageEnv) checkClean(t testing.TB, key string) {
	t.Helper()
	if ms := e.mounts(); len(ms) > 0 {
		t.Errorf("still mounted: %v", ms)
	}
	matches, _ := filepath.Glob(filepath.Join(e.mountDir, "*", key))
	if len(matches) > 0 {
		t.Errorf("berth's directory of %s is left: %v", key, matches)
	}
	if _, err := os.Lstat(filepath.Join(e.root, key)); err == nil {
		t.Errorf("the plugin still has %s: was Release not called?", key)
	}
	if holds, _ := filepath.Glob(filepath.Join(e.dir, "store", "holds", "*."+key)); len(holds) > 0 {
		t.Errorf("the store still holds the layers of %s: %v", key, holds)
	}
}

var ctx = context.Background()

// A plugin's rootfs round trip: berth mounts what the plugin answers,
// nosuid and nodev, lists it, and Release undoes all of it; a second
// Release and an unknown key are not-found errors that sandbox's reclaim
// recognises.
func TestStoragePrepareRelease(t *testing.T) {
	e := newStorageEnv(t)
	s := e.open(t, nil)

	for _, mode := range []string{"bind", "overlay"} {
		t.Run(mode, func(t *testing.T) {
			key := mode + "--1"
			r, err := s.Prepare(ctx, key, e.img, nil)
			if err != nil {
				t.Fatal(err)
			}
			if r.Key != key || r.Image != e.img.Digest || r.Driver != "test" || !strings.HasPrefix(r.Path, e.mountDir+"/") {
				t.Errorf("rootfs %+v", r)
			}
			var sfs unix.Statfs_t
			if err := unix.Statfs(r.Path, &sfs); err != nil {
				t.Fatal(err)
			}
			if sfs.Flags&unix.ST_NOSUID == 0 || sfs.Flags&unix.ST_NODEV == 0 {
				t.Errorf("rootfs mounted without nosuid or nodev: flags %#x", sfs.Flags)
			}
			switch mode {
			case "bind":
				if b, err := os.ReadFile(filepath.Join(r.Path, "marker")); err != nil || string(b) != key {
					t.Errorf("marker: %q, %v", b, err)
				}
			case "overlay":
				if b, err := os.ReadFile(filepath.Join(r.Path, "etc", "os-release")); err != nil || !strings.Contains(string(b), "Alpine") {
					t.Errorf("/etc/os-release: %q, %v", b, err)
				}
				if err := os.WriteFile(filepath.Join(r.Path, "written"), []byte("x"), 0o644); err != nil {
					t.Fatal(err)
				}
				if _, err := os.Stat(filepath.Join(e.root, key, "upper", "written")); err != nil {
					t.Errorf("a write to the rootfs is not in the plugin's upper directory: %v", err)
				}
			}
			keys, err := s.Rootfses(ctx)
			if err != nil || !contains(keys, key) {
				t.Errorf("Rootfses = %v, %v; want %s among them", keys, err, key)
			}
			if _, err := s.Prepare(ctx, key, e.img, nil); !errors.Is(err, plugin.ErrExists) || !errors.Is(err, layerfs.ErrExists) {
				t.Errorf("second Prepare: %v, want ErrExists", err)
			}
			if err := s.Release(ctx, key); err != nil {
				t.Fatal(err)
			}
			e.checkClean(t, key)
			err = s.Release(ctx, key)
			if !errors.Is(err, plugin.ErrNotFound) || !errors.Is(err, layerfs.ErrNotFound) {
				t.Errorf("second Release: %v, want ErrNotFound of both plugin and layerfs", err)
			}
		})
	}

	if err := s.Release(ctx, "never"); !errors.Is(err, plugin.ErrNotFound) || !errors.Is(err, layerfs.ErrNotFound) {
		t.Errorf("Release of an unknown key: %v, want ErrNotFound", err)
	}
	for _, key := range []string{"", "../x", "a/b", ".hidden", strings.Repeat("k", 129)} {
		if _, err := s.Prepare(ctx, key, e.img, nil); !errors.Is(err, plugin.ErrInvalid) {
			t.Errorf("Prepare of key %q: %v, want ErrInvalid", key, err)
		}
	}
	// The plugin enforces no quota: berth refuses before asking it.
	_, err := s.Prepare(ctx, "bind--quota", e.img, &layerfs.PrepareOptions{DiskQuota: 64 << 20})
	if !errors.Is(err, plugin.ErrUnsupported) {
		t.Errorf("Prepare with a quota: %v, want ErrUnsupported", err)
	}
	e.checkClean(t, "bind--quota")
}

// A plugin answering nonsense is refused, not obeyed: nothing stays
// mounted (nothing is mounted through a planted link at all), berth's
// directory is gone and the plugin was told to release what it made.
func TestStorageRefusesLies(t *testing.T) {
	e := newStorageEnv(t)
	s := e.open(t, nil)
	etcBefore := mountedAt("/etc")
	for _, lie := range []string{
		"outside", "relative", "dotdot", "denied", "symlink-source", "symlink-target",
		"target-dotdot", "target-abs", "target-root", "type-ext4", "type-proc", "type-sysfs",
		"opt-suid", "opt-dev", "opt-rbind", "tmpfs-uid", "tmpfs-mode",
		"lowerdir-plus", "datadir-plus", "lower-outside", "upper-outside", "metacopy", "many",
	} {
		t.Run(lie, func(t *testing.T) {
			key := lie + "--1"
			_, err := s.Prepare(ctx, key, e.img, nil)
			if !errors.Is(err, plugin.ErrRefused) {
				t.Fatalf("Prepare: %v, want ErrRefused", err)
			}
			t.Log(err)
			e.checkClean(t, key)
		})
	}
	if mountedAt("/etc") != etcBefore {
		t.Error("something was mounted on the host's /etc")
	}
	// And an honest answer still works after all that.
	if _, err := s.Prepare(ctx, "bind--after", e.img, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Release(ctx, "bind--after"); err != nil {
		t.Fatal(err)
	}
}

// mountedAt counts the mounts on p.
func mountedAt(p string) int {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == p {
			n++
		}
	}
	return n
}

// A plugin that announces "/" as its root (or any root berth's own or the
// kernel's directories are in) is not opened at all.
func TestStorageRefusesRoots(t *testing.T) {
	e := newStorageEnv(t)
	bin := filepath.Join(filepath.Dir(e.bin), "teststorage-rootslash")
	if err := os.Link(e.bin, bin); err != nil {
		t.Fatal(err)
	}
	s, err := plugin.OpenStorage(ctx, bin, &plugin.Options{Store: e.store, MountDir: e.mountDir})
	if !errors.Is(err, plugin.ErrRefused) {
		if s != nil {
			s.Close()
		}
		t.Fatalf("OpenStorage of a plugin with root /: %v, want ErrRefused", err)
	}
	t.Log(err)
}

// newUserNS returns a user namespace mapping 0-65535 to 100000-165535,
// held by a child process for the test's duration.
func newUserNS(t testing.TB) *os.File {
	t.Helper()
	cmd := exec.Command("sleep", "1000")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  unix.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 100000, Size: 65536}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 100000, Size: 65536}},
		Pdeathsig:   syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	ns, err := os.Open("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/ns/user")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

var usernsMaps = []layerfs.IDMap{{ContainerID: 0, HostID: 100000, Size: 65536}}

// Under a user namespace, berth idmaps what the plugin marks: a bind, and
// an overlay's layers (and gives the upper directory's root the mapped
// owner), so that the image's root files show as the namespace's root.
// An answer with nothing to idmap is refused before anything is mounted.
func TestStorageIDMap(t *testing.T) {
	e := newStorageEnv(t)
	s := e.open(t, nil)
	ns := newUserNS(t)
	popts := func() *layerfs.PrepareOptions {
		return &layerfs.PrepareOptions{UserNS: ns, UIDMap: usernsMaps, GIDMap: usernsMaps}
	}
	for _, tt := range []struct{ mode, file string }{{"bind", "marker"}, {"overlay", "etc/os-release"}} {
		t.Run(tt.mode, func(t *testing.T) {
			key := tt.mode + "--ns"
			r, err := s.Prepare(ctx, key, e.img, popts())
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range []string{tt.file, "."} {
				var st unix.Stat_t
				if err := unix.Stat(filepath.Join(r.Path, p), &st); err != nil {
					t.Fatal(err)
				}
				if st.Uid != 100000 || st.Gid != 100000 {
					t.Errorf("%s shows owner %d:%d, want 100000:100000", p, st.Uid, st.Gid)
				}
			}
			if err := s.Release(ctx, key); err != nil {
				t.Fatal(err)
			}
			e.checkClean(t, key)
		})
	}
	_, err := s.Prepare(ctx, "bind-noidmap--ns", e.img, popts())
	if !errors.Is(err, plugin.ErrUnsupported) {
		t.Errorf("Prepare of a rootfs with nothing to idmap: %v, want ErrUnsupported", err)
	}
	e.checkClean(t, "bind-noidmap--ns")

	// A plugin that shifts owners itself gets the maps, berth idmaps
	// nothing, and the namespace's root may still reach the rootfs.
	bin := filepath.Join(filepath.Dir(e.bin), "teststorage-shifter")
	if err := os.Link(e.bin, bin); err != nil {
		t.Fatal(err)
	}
	sh, err := plugin.OpenStorage(ctx, bin, &plugin.Options{Store: e.store, MountDir: e.mountDir})
	if err != nil {
		t.Fatal(err)
	}
	defer sh.Close()
	r, err := sh.Prepare(ctx, "bind-noidmap--shifter", e.img, popts())
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(r.Path, "marker"), &st); err != nil || st.Uid != 0 {
		t.Errorf("marker of a shifting plugin shows owner %d (%v), want 0: berth idmapped it", st.Uid, err)
	}
	if err := unix.Stat(filepath.Dir(r.Path), &st); err != nil || st.Gid != 100000 || st.Mode&0o777 != 0o710 {
		t.Errorf("the rootfs's directory has group %d, mode %o (%v); want 100000, 710", st.Gid, st.Mode&0o777, err)
	}
	if err := sh.Release(ctx, "bind-noidmap--shifter"); err != nil {
		t.Fatal(err)
	}
	e.checkClean(t, "bind-noidmap--shifter")
}

// A host that restarts finds the rootfses it mounted through its records
// and releases them, with the plugin's part.
func TestStorageReleaseAfterRestart(t *testing.T) {
	e := newStorageEnv(t)
	s := e.open(t, nil)
	if _, err := s.Prepare(ctx, "overlay--old", e.img, nil); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2 := e.open(t, nil)
	keys, err := s2.Rootfses(ctx)
	if err != nil || !contains(keys, "overlay--old") {
		t.Fatalf("Rootfses after a restart = %v, %v", keys, err)
	}
	if err := s2.Release(ctx, "overlay--old"); err != nil {
		t.Fatal(err)
	}
	e.checkClean(t, "overlay--old")
}

// Diff streams the plugin's tar, in several chunks for a large file.
func TestStorageDiff(t *testing.T) {
	e := newStorageEnv(t)
	s := e.open(t, nil)
	r, err := s.Prepare(ctx, "overlay--diff", e.img, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release(ctx, "overlay--diff")
	big := strings.Repeat("0123456789abcdef", 3<<16) // 3 MiB
	if err := os.WriteFile(filepath.Join(r.Path, "big"), []byte(big), 0o644); err != nil {
		t.Fatal(err)
	}
	var out chunks
	if err := s.Diff(ctx, "overlay--diff", &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), big) || !strings.HasPrefix(out.String(), "big") {
		t.Errorf("the diff (%d bytes) does not hold the file written", out.Len())
	}
	if out.writes < 3 || out.largest > 1<<20 {
		t.Errorf("the diff came in %d pieces, the largest %d bytes; want pieces of at most 1 MiB", out.writes, out.largest)
	}
	if err := s.Diff(ctx, "nope", &out); !errors.Is(err, plugin.ErrNotFound) || !errors.Is(err, layerfs.ErrNotFound) {
		t.Errorf("Diff of an unknown key: %v, want ErrNotFound", err)
	}

	// A plugin that does not announce diff is not asked.
	bin := filepath.Join(filepath.Dir(e.bin), "teststorage-nodiff")
	if err := os.Link(e.bin, bin); err != nil {
		t.Fatal(err)
	}
	nd, err := plugin.OpenStorage(ctx, bin, &plugin.Options{Store: e.store, MountDir: e.mountDir})
	if err != nil {
		t.Fatal(err)
	}
	defer nd.Close()
	if nd.Info().Has(plugin.CapDiff) {
		t.Fatal("the nodiff plugin announces diff")
	}
	if err := nd.Diff(ctx, "overlay--diff", &out); !errors.Is(err, plugin.ErrUnsupported) {
		t.Errorf("Diff from a plugin without capability diff: %v, want ErrUnsupported", err)
	}
}

// chunks is a strings.Builder that counts the writes it gets.
type chunks struct {
	strings.Builder
	writes, largest int
}

func (c *chunks) Write(p []byte) (int, error) {
	c.writes++
	c.largest = max(c.largest, len(p))
	return c.Builder.Write(p)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// A sandbox runs on a plugin's rootfs as on the built-in one, with the
// Strict preset's user namespace (which berth idmaps the overlay's layers
// for: the image's files show as owned by the namespace's root) and
// without one, and leaves nothing mounted.
func TestStorageSandbox(t *testing.T) {
	e := newStorageEnv(t)
	s := e.open(t, nil)
	cgm, err := cgroup.NewManager(cgroup.Options{Parent: "berth-plugin-storage-" + strconv.Itoa(os.Getpid())})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cgm.RemoveParent() })
	for _, preset := range []string{"strict", "default"} {
		t.Run(preset, func(t *testing.T) {
			sec, err := security.Preset(preset)
			if err != nil {
				t.Fatal(err)
			}
			var out, errOut strings.Builder
			res, err := sandbox.New("alpine:test", &sandbox.Options{
				Storage: s, Cgroups: cgm, StateDir: filepath.Join(e.dir, "state"), Security: sec,
				Args:   []string{"/bin/sh", "-c", "cat /etc/os-release /proc/self/uid_map && stat -c %u:%g /etc/os-release /"},
				Stdout: &out, Stderr: &errOut,
			}).Run(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if !res.Success() || !strings.Contains(out.String(), "Alpine Linux") || !strings.HasSuffix(out.String(), "\n0:0\n0:0\n") {
				t.Fatalf("exit %d, stdout %q, stderr %q", res.ExitCode, out.String(), errOut.String())
			}
			if userns := strings.Contains(out.String(), " 100000 "); userns != (sec.UserNamespace != nil) {
				t.Errorf("in a user namespace: %v, want %v (uid_map in %q)", userns, sec.UserNamespace != nil, out.String())
			}
			if ms := e.mounts(); len(ms) > 0 {
				t.Errorf("still mounted after the sandbox: %v", ms)
			}
			if keys, err := s.Rootfses(ctx); err != nil || len(keys) > 0 {
				t.Errorf("Rootfses after the sandbox = %v, %v", keys, err)
			}
		})
	}
}

// A plugin killed in the middle of a Prepare fails that Prepare with
// ErrPluginExited, leaves nothing mounted, and the plugin, started again,
// is told to release what its predecessor made and serves the next
// Prepare. A plugin that hangs is bounded by the caller's context.
func TestStorageKillMidPrepare(t *testing.T) {
	e := newStorageEnv(t)
	s := e.open(t, nil)
	hanging := filepath.Join(e.root, "hanging")

	errc := make(chan error, 1)
	go func() {
		_, err := s.Prepare(ctx, "hang--kill", e.img, nil)
		errc <- err
	}()
	var pid int
	for range 3000 {
		b, err := os.ReadFile(hanging)
		if err == nil {
			pid, _ = strconv.Atoi(string(b))
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if pid == 0 {
		t.Fatal("the plugin never started the Prepare")
	}
	os.Remove(hanging)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err := <-errc
	if !errors.Is(err, plugin.ErrPluginExited) {
		t.Fatalf("Prepare whose plugin was killed: %v, want ErrPluginExited", err)
	}
	t.Log(err)
	e.checkClean(t, "hang--kill")

	r, err := s.Prepare(ctx, "bind--after", e.img, nil)
	if err != nil {
		t.Fatalf("Prepare after the plugin was killed: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(r.Path, "marker")); err != nil || string(b) != "bind--after" {
		t.Errorf("marker: %q, %v", b, err)
	}
	if err := s.Release(ctx, "bind--after"); err != nil {
		t.Fatal(err)
	}

	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, err := s.Prepare(short, "hang--deadline", e.img, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Prepare past its deadline: %v, want context.DeadlineExceeded", err)
	}
	e.checkClean(t, "hang--deadline")
}

// On kernels before 6.8 overlays are mounted with mount(2), from the same
// descriptors; the idmapping of their layers works there too.
func TestStorageLegacyOverlay(t *testing.T) {
	e := newStorageEnv(t)
	s := e.open(t, nil)
	plugin.UseLegacyOverlay(s)
	ns := newUserNS(t)
	for _, popts := range []*layerfs.PrepareOptions{nil, {UserNS: ns, UIDMap: usernsMaps, GIDMap: usernsMaps}} {
		key := "overlay--legacy"
		r, err := s.Prepare(ctx, key, e.img, popts)
		if err != nil {
			t.Fatal(err)
		}
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(r.Path, "etc", "os-release"), &st); err != nil {
			t.Fatal(err)
		}
		if want := uint32(0); popts != nil && st.Uid != 100000 || popts == nil && st.Uid != want {
			t.Errorf("user namespace %v: /etc/os-release shows owner %d", popts != nil, st.Uid)
		}
		var sfs unix.Statfs_t
		if err := unix.Statfs(r.Path, &sfs); err != nil {
			t.Fatal(err)
		}
		if sfs.Flags&unix.ST_NOSUID == 0 || sfs.Flags&unix.ST_NODEV == 0 {
			t.Errorf("overlay mounted without nosuid or nodev: flags %#x", sfs.Flags)
		}
		if err := s.Release(ctx, key); err != nil {
			t.Fatal(err)
		}
		e.checkClean(t, key)
	}
}

// One plugin serves many Prepares and Releases at once; of two Prepares
// of one key, one fails with ErrExists.
func TestStorageConcurrent(t *testing.T) {
	e := newStorageEnv(t)
	s := e.open(t, nil)
	const n = 8
	errc := make(chan error, 2*n)
	for i := range n {
		go func() {
			key := "bind--c" + strconv.Itoa(i)
			r, err := s.Prepare(ctx, key, e.img, nil)
			if err == nil {
				var b []byte
				if b, err = os.ReadFile(filepath.Join(r.Path, "marker")); err == nil && string(b) != key {
					err = errors.New(key + " shows " + string(b))
				}
				if rerr := s.Release(ctx, key); err == nil {
					err = rerr
				}
			}
			errc <- err
		}()
		go func() {
			_, err := s.Prepare(ctx, "overlay--same", e.img, nil)
			errc <- err
		}()
	}
	exists := 0
	for range 2 * n {
		err := <-errc
		if errors.Is(err, plugin.ErrExists) {
			exists++
		} else if err != nil {
			t.Error(err)
		}
	}
	if exists != n-1 {
		t.Errorf("%d Prepares of one key failed with ErrExists, want %d", exists, n-1)
	}
	if err := s.Release(ctx, "overlay--same"); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		e.checkClean(t, "bind--c"+strconv.Itoa(i))
	}
	e.checkClean(t, "overlay--same")
}

// The test plugin, honest by default, keeps the contract the kit checks;
// this runs berth's side of it (the adapter) through every check too.
func TestStorageConformance(t *testing.T) {
	e := newStorageEnv(t)
	plugintest.Storage(t, e.bin, nil)
}

// A store and a mount directory reached through symlinks still work:
// berth gives the plugin its layers by their real path, and mounts on its
// own directory's, which it opens without following links.
func TestStorageStoreBehindSymlink(t *testing.T) {
	e := newStorageEnv(t)
	link := filepath.Join(e.dir, "storelink")
	if err := os.Symlink(filepath.Join(e.dir, "store"), link); err != nil {
		t.Fatal(err)
	}
	store, err := layerfs.Open(link, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The mount directory too.
	if err := os.Mkdir(e.mountDir, 0o711); err != nil {
		t.Fatal(err)
	}
	mntLink := filepath.Join(e.dir, "mntlink")
	if err := os.Symlink(e.mountDir, mntLink); err != nil {
		t.Fatal(err)
	}
	s, err := plugin.OpenStorage(ctx, e.bin, &plugin.Options{Store: store, MountDir: mntLink})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r, err := s.Prepare(ctx, "overlay--link", e.img, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(r.Path, "etc", "os-release")); err != nil {
		t.Error(err)
	}
	if err := s.Release(ctx, "overlay--link"); err != nil {
		t.Fatal(err)
	}
	e.checkClean(t, "overlay--link")
}

// The store's GC keeps the layers under a plugin's rootfs, even once
// their image is removed, until the rootfs is released.
func TestStorageHoldsLayers(t *testing.T) {
	e := newStorageEnv(t)
	s := e.open(t, nil)
	r, err := s.Prepare(ctx, "overlay--held", e.img, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store.Remove(ctx, e.img.Digest.String()); err != nil {
		t.Fatal(err)
	}
	if res, err := e.store.GC(ctx); err != nil || res.Layers != 0 {
		t.Errorf("gc under a plugin's rootfs: %+v, %v; want no layer removed", res, err)
	}
	if _, err := os.Stat(filepath.Join(r.Path, "etc", "os-release")); err != nil {
		t.Errorf("the rootfs after gc: %v", err)
	}
	if err := s.Release(ctx, "overlay--held"); err != nil {
		t.Fatal(err)
	}
	e.checkClean(t, "overlay--held")
	if res, err := e.store.GC(ctx); err != nil || res.Layers != len(e.img.Layers) {
		t.Errorf("gc after release: %+v, %v; want %d layers removed", res, err, len(e.img.Layers))
	}
}
