package main

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/plugin"
	"github.com/berth-dev/berth/sandbox"
	"github.com/berth-dev/berth/security"
)

// openPlugin starts the built plugin for berth, with rootfses sized by
// settings, and closes it at the end of the test.
func openPlugin(t *testing.T, settings map[string]string) (*plugin.Storage, string) {
	t.Helper()
	return openPluginEnv(t, settings, nil)
}

// openPluginEnv is openPlugin with env added to the plugin's environment.
func openPluginEnv(t *testing.T, settings map[string]string, env []string) (*plugin.Storage, string) {
	t.Helper()
	setup(t)
	dir := testDir(t)
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o711); err != nil {
		t.Fatal(err)
	}
	st, err := plugin.OpenStorage(context.Background(), shared.bin, &plugin.Options{
		Store:    shared.env.Store,
		MountDir: mnt,
		RunDir:   filepath.Join(dir, "run"),
		Settings: settings,
		Env:      env,
		Logger:   testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st, mnt
}

// A workload that writes more than its rootfs's tmpfs holds gets ENOSPC
// in the sandbox; what it wrote is on the tmpfs, not in the store or the
// state on the host's disk; and when the sandbox ends, the tmpfs, berth's
// mount of the rootfs and their directories are all gone.
func TestSandboxWritesUntilENOSPC(t *testing.T) {
	for _, tc := range []struct {
		name    string
		sec     func() *security.Config
		hostUID int // what the workload's root writes as
	}{
		{"Default", security.Default, 0},
		{"UserNamespace", func() *security.Config {
			c := security.Default()
			c.UserNamespace = security.DefaultUserNamespace()
			return c
		}, int(security.DefaultUserNamespace().UIDMap[0].HostID)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, mnt := openPlugin(t, map[string]string{"size": "8m"})
			var out testenv.SyncBuffer
			sb := sandbox.New("alpine:test", &sandbox.Options{
				Storage: st, Cgroups: shared.env.Cgroups, StateDir: shared.env.StateDir,
				Security: tc.sec(),
				Args:     []string{"sleep", "1000"},
				Stdout:   &out, Stderr: &out,
				Logger: testLogger(t),
			})
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if err := sb.Start(ctx); err != nil {
				t.Fatal(err)
			}
			defer sb.Close()
			res, err := sb.Exec(ctx, &sandbox.ExecOptions{
				Args:   []string{"sh", "-c", "dd if=/dev/zero of=/big bs=1M count=64; echo dd=$?; id -u; ls -ln /big"},
				Stdout: &out, Stderr: &out,
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("exit %d:\n%s", res.ExitCode, out.String())
			if !strings.Contains(out.String(), "No space left on device") || !strings.Contains(out.String(), "dd=1") {
				t.Errorf("dd of 64 MiB into an 8 MiB rootfs did not fail with ENOSPC:\n%s", out.String())
			}

			// The bytes are on the plugin's tmpfs...
			keys, err := st.Rootfses(ctx)
			if err != nil || len(keys) != 1 {
				t.Fatalf("plugin's rootfses: %v, %v", keys, err)
			}
			big := filepath.Join(shared.root, keys[0], upperDir, "big")
			fi, err := os.Stat(big)
			if err != nil || fi.Size() < 4<<20 || fi.Size() > 8<<20 {
				t.Fatalf("%s: %v, %v; want the 4-8 MiB dd wrote", big, fi, err)
			}
			if uid := fi.Sys().(*syscall.Stat_t).Uid; int(uid) != tc.hostUID {
				t.Errorf("%s is owned by host uid %d, want %d", big, uid, tc.hostUID)
			}
			var sfs unix.Statfs_t
			if err := unix.Statfs(big, &sfs); err != nil || sfs.Type != unix.TMPFS_MAGIC {
				t.Errorf("%s is on a filesystem of type %#x (%v), not tmpfs", big, sfs.Type, err)
			}
			// ...and nowhere on the host's disk: not in the store, not in
			// the sandbox's state.
			for _, dir := range []string{shared.env.Dir} {
				filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
					if err == nil && d.Type().IsRegular() {
						if fi, err := d.Info(); err == nil && fi.Size() >= 1<<20 && d.Name() == "big" {
							t.Errorf("the workload's file is on the host's disk at %s", p)
						}
					}
					return nil
				})
			}

			if err := sb.Kill(); err != nil {
				t.Fatal(err)
			}
			if _, err := sb.Wait(); err != nil {
				t.Logf("wait: %v", err)
			}
			if err := sb.Close(); err != nil {
				t.Fatal(err)
			}
			if keys, err := st.Rootfses(ctx); err != nil || len(keys) != 0 {
				t.Errorf("plugin's rootfses after the sandbox ended: %v, %v", keys, err)
			}
			for _, dir := range []string{shared.root, mnt} {
				if m := mountsUnder(t, dir); len(m) > 0 {
					t.Errorf("mounts left under %s: %v", dir, m)
				}
			}
			if entries, _ := os.ReadDir(shared.root); len(entries) > 0 {
				t.Errorf("entries left in the plugin's root: %v", entries)
			}
			// berth keeps a directory per plugin in its mount directory;
			// the sandbox's own must be gone from it.
			filepath.WalkDir(mnt, func(p string, d fs.DirEntry, err error) error {
				if err == nil && strings.Contains(p, sb.ID()) {
					t.Errorf("left in berth's mount directory: %s", p)
				}
				return nil
			})
		})
	}
}

// The pages a workload writes to its tmpfs are charged to its own memory
// cgroup: a rootfs sized beyond the sandbox's memory limit cannot be used
// to take more of the host's memory than the limit allows.
func TestSandboxRootfsCountsAgainstMemoryLimit(t *testing.T) {
	st, _ := openPlugin(t, map[string]string{"size": "256m"})
	var out testenv.SyncBuffer
	sb := sandbox.New("alpine:test", &sandbox.Options{
		Storage: st, Cgroups: shared.env.Cgroups, StateDir: shared.env.StateDir,
		Resources: &cgroup.Resources{MemoryMax: 32 << 20, MemorySwapMax: 32 << 20},
		Args:      []string{"sh", "-c", "dd if=/dev/zero of=/big bs=1M count=128; echo dd=$?"},
		Stdout:    &out, Stderr: &out,
		Logger: testLogger(t),
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := sb.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v\n%s", res, out.String())
	if res.PeakMemory > 40<<20 {
		t.Errorf("peak memory %d, more than the 32 MiB limit", res.PeakMemory)
	}
	if strings.Contains(out.String(), "dd=0") {
		t.Errorf("dd wrote 128 MiB into a sandbox limited to 32 MiB of memory:\n%s", out.String())
	}
}

// Diff through the protocol: what a workload in a user namespace changed
// comes back as an OCI layer with the image's owners, its deletions as
// whiteouts.
func TestSandboxDiff(t *testing.T) {
	st, _ := openPlugin(t, map[string]string{"size": "16m"})
	sec := security.Default()
	sec.UserNamespace = security.DefaultUserNamespace()
	sb := sandbox.New("alpine:test", &sandbox.Options{
		Storage: st, Cgroups: shared.env.Cgroups, StateDir: shared.env.StateDir,
		Security: sec, Args: []string{"sleep", "1000"}, Logger: testLogger(t),
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := sb.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	var out testenv.SyncBuffer
	res, err := sb.Exec(ctx, &sandbox.ExecOptions{
		Args:   []string{"sh", "-c", "echo hi > /root/new && chown 1000:1000 /root/new && rm /etc/motd"},
		Stdout: &out, Stderr: &out,
	})
	if err != nil || !res.Success() {
		t.Fatalf("exec: %v, %+v\n%s", err, res, out.String())
	}
	keys, err := st.Rootfses(ctx)
	if err != nil || len(keys) != 1 {
		t.Fatalf("plugin's rootfses: %v, %v", keys, err)
	}
	var buf bytes.Buffer
	if err := st.Diff(ctx, keys[0], &buf); err != nil {
		t.Fatal(err)
	}
	list, data := readTar(t, buf.Bytes())
	got := strings.Join(list, "\n")
	for _, want := range []string{"etc/ 5 0:0", "etc/.wh.motd 0 0:0", "root/ 5 0:0", "root/new 0 1000:1000"} {
		if !slices.Contains(list, want) {
			t.Errorf("diff lacks %q:\n%s", want, got)
		}
	}
	if data["root/new"] != "hi\n" {
		t.Errorf("root/new holds %q", data["root/new"])
	}
}

// A host that cannot pass the plugin flags sets them by its environment.
func TestFlagsFromEnvironment(t *testing.T) {
	st, _ := openPluginEnv(t, nil, []string{"BERTH_TMPFS_STORAGE_SIZE=3m", "BERTH_TMPFS_STORAGE_INODES=300"})
	ctx := context.Background()
	img, err := st.Image(ctx, "alpine:test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Prepare(ctx, "env", img, nil); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := st.Release(ctx, "env"); err != nil {
			t.Error(err)
		}
	}()
	var sfs unix.Statfs_t
	if err := unix.Statfs(filepath.Join(shared.root, "env"), &sfs); err != nil {
		t.Fatal(err)
	}
	if size := int64(sfs.Blocks) * sfs.Bsize; size != 3<<20 || sfs.Files != 300 {
		t.Errorf("tmpfs of %d bytes and %d inodes, want %d and 300", size, sfs.Files, 3<<20)
	}
}
