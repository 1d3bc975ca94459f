package sandbox

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

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
