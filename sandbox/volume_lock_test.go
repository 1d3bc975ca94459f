package sandbox

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/layerfs"
	"github.com/berth-dev/berth/security"
)

// In a user namespace, the submounts of a bound host directory are
// locked, as the kernel locks every mount that crosses into a less
// privileged namespace: even a workload with CAP_SYS_ADMIN there can
// neither unmount one, to see what the host hid under it, nor clear a
// flag the host gave it (read-only here).
func TestBindSubmountsLockedInUserNS(t *testing.T) {
	vol := hostDir(t)
	// The namespace's root must reach the source by its path.
	if err := os.Chmod(filepath.Dir(vol), 0o755); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(vol, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sub, "hidden"), []byte("under the mount\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	hostTmpfs(t, sub, unix.MS_RDONLY)
	sec := security.Strict()
	sec.Capabilities = []string{"CAP_SYS_ADMIN"}
	sec.Seccomp = nil
	sec.Landlock = false
	out, errOut, err := tryRun(opts(func(o *Options) {
		o.Security = sec
		o.Mounts = []Mount{{Source: vol, Destination: "/data"}}
		o.Args = []string{"sh", "-c", `
			mount -o remount,bind,rw /data/sub 2>/dev/null && echo "made rw"
			touch /data/sub/x 2>/dev/null && echo "wrote the read-only submount"
			umount /data/sub 2>/dev/null && echo unmounted
			umount -l /data/sub 2>/dev/null && echo "lazily unmounted"
			cat /data/sub/hidden 2>/dev/null
			echo done`}
	}))
	if err != nil {
		t.Fatalf("%v (%s)", err, errOut)
	}
	if strings.TrimSpace(out) != "done" {
		t.Errorf("a workload with CAP_SYS_ADMIN in its user namespace changed a bound submount:\n%s", out)
	}
}

// A named volume is bound for a workload with CAP_SYS_ADMIN in its user
// namespace too, when the store's own path goes through a symbolic link,
// which is the store's configuration and trusted.
func TestVolumeLockedThroughStoreLink(t *testing.T) {
	link := filepath.Join(testEnv.dir, "store-link")
	if err := os.Symlink(filepath.Join(testEnv.dir, "store"), link); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(link)
	store, err := layerfs.Open(link, nil)
	if err != nil {
		t.Fatal(err)
	}
	name := "locked-" + strconv.Itoa(os.Getpid())
	defer store.RemoveVolume(context.Background(), name)
	dir, err := store.Volume(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("kept\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sec := security.Strict()
	sec.Capabilities = []string{"CAP_SYS_ADMIN"}
	out, errOut, err := tryRun(opts(func(o *Options) {
		o.Storage = store
		o.Security = sec
		o.Mounts = []Mount{{Type: "volume", Source: name, Destination: "/data"}}
		o.Args = []string{"sh", "-c", "cat /data/f"}
	}))
	if err != nil || out != "kept\n" {
		t.Errorf("volume through the store's link: %q %v (%s)", out, err, errOut)
	}
}

// Once a sandbox runs, neither its PID 1 nor its workload holds a
// descriptor of a bind's source (the host's detached tree of it, or what
// the init opened to clone it again): whatever a process of the sandbox
// could do with one, there is none to do it with. Under Default, Strict
// and a preset that keeps CAP_SYS_ADMIN in a user namespace.
func TestNoMountSourceDescriptorInSandbox(t *testing.T) {
	vol := hostDir(t)
	if err := os.Chmod(filepath.Dir(vol), 0o755); err != nil {
		t.Fatal(err)
	}
	var src unix.Stat_t
	if err := unix.Stat(vol, &src); err != nil {
		t.Fatal(err)
	}
	admin := security.Strict()
	admin.Capabilities = []string{"CAP_SYS_ADMIN"}
	for name, sec := range map[string]*security.Config{"default": security.Default(), "strict": security.Strict(), "userns-admin": admin} {
		sb := New("alpine:test", opts(func(o *Options) {
			o.Security = sec
			o.Mounts = []Mount{{Source: vol, Destination: "/data"}}
			o.Args = []string{"sleep", "60"}
		}))
		if err := sb.Start(context.Background()); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		pids := []string{strconv.Itoa(sb.proc.Pid)}
		children, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", sb.proc.Pid, sb.proc.Pid))
		pids = append(pids, strings.Fields(string(children))...)
		if len(pids) < 2 {
			t.Errorf("%s: no workload found under PID 1", name)
		}
		for _, pid := range pids {
			dir := "/proc/" + pid + "/fd"
			ents, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range ents {
				var st unix.Stat_t
				if unix.Stat(filepath.Join(dir, e.Name()), &st) == nil && st.Dev == src.Dev && st.Ino == src.Ino {
					t.Errorf("%s: process %s holds the bind's source at fd %s", name, pid, e.Name())
				}
			}
		}
		sb.Kill()
		sb.Wait()
		sb.Close()
	}
}

// With CAP_SYS_ADMIN in a user namespace, the init looks a bind's source
// up again by its path; a directory swapped in on that path after the host
// opened the source (here a real one, not a link) is refused, not
// mounted.
func TestLockedSourceSwappedAfterCheck(t *testing.T) {
	vol := hostDir(t)
	if err := os.Chmod(filepath.Dir(vol), 0o755); err != nil {
		t.Fatal(err)
	}
	leaf := filepath.Join(vol, "mid", "leaf")
	other := filepath.Join(vol, "other", "leaf")
	for dir, marker := range map[string]string{leaf: "checked\n", other: "swapped in\n"} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "marker"), []byte(marker), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sec := security.Strict()
	sec.Capabilities = []string{"CAP_SYS_ADMIN"}
	swapped := false
	out, errOut, err := tryRun(opts(func(o *Options) {
		o.Security = sec
		o.Network = hookNetwork{hook: func() {
			mid := filepath.Join(vol, "mid")
			if err := os.Rename(mid, mid+".old"); err != nil {
				t.Error(err)
				return
			}
			if err := os.Rename(filepath.Join(vol, "other"), mid); err != nil {
				t.Error(err)
				return
			}
			swapped = true
		}}
		o.Mounts = []Mount{{Source: leaf, Destination: "/data"}}
		o.Args = []string{"cat", "/data/marker"}
	}))
	if !swapped {
		t.Fatal("the hook did not run")
	}
	if err == nil || !strings.Contains(err.Error(), "elsewhere") {
		t.Errorf("a source swapped after the check: %q, %v (%s); want it refused", out, err, errOut)
	}
}
