package sandbox

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/security"
)

const testDiskQuota = 4 << 20

// fillDisk writes a 12 MiB file and then empty files until the rootfs is
// full, and says how far each got: "bytes N" and "files N".
const fillDisk = `dd if=/dev/zero of=/big bs=64k count=192 2>/tmp/dd.err; grep -o 'No space left on device\|Disk quota exceeded' /tmp/dd.err | head -1
echo bytes $(stat -c %s /big)
rm /big; mkdir /many; i=0; while touch /many/$i 2>/dev/null; do i=$((i+1)); [ $i -ge 5000 ] && break; done
echo files $i`

// TestDiskQuota fills the rootfs of a sandbox with a 4 MiB quota, under
// Default and Strict (with a writable root), and checks that the workload stops at the quota
// (bytes and inodes) while the host's disk holds no more for it than
// that, and that nothing of the quota stays behind.
func TestDiskQuota(t *testing.T) {
	// Strict's root is read-only; with a writable one, the quota holds
	// in its user namespace, over idmapped layers.
	strict := security.Strict()
	strict.ReadonlyRootfs = false
	for name, sec := range map[string]*security.Config{"default": security.Default(), "strict-writable-root": strict} {
		t.Run(name, func(t *testing.T) {
			sb := New("alpine:test", opts(func(o *Options) {
				o.Args = []string{"sleep", "100"}
				o.Security = sec
				o.DiskQuota = testDiskQuota
			}))
			if err := sb.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			defer sb.Close()
			var out, errOut bytes.Buffer
			res, err := sb.Exec(context.Background(), &ExecOptions{Args: []string{"/bin/sh", "-c", fillDisk}, Stdout: &out, Stderr: &errOut})
			if err != nil || !res.Success() {
				t.Fatalf("filler: %+v %v\n%s%s", res, err, out.String(), errOut.String())
			}
			t.Logf("%s", out.String())
			got := map[string]int64{}
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			for _, l := range lines {
				if k, v, ok := strings.Cut(l, " "); ok {
					got[k], _ = strconv.ParseInt(v, 10, 64)
				}
			}
			if lines[0] != "No space left on device" && lines[0] != "Disk quota exceeded" {
				t.Errorf("dd past the quota: %q, want ENOSPC or EDQUOT", lines[0])
			}
			if b := got["bytes"]; b < testDiskQuota*3/4 || b > testDiskQuota {
				t.Errorf("wrote %d bytes under a quota of %d", b, testDiskQuota)
			}
			if f := got["files"]; f < 700 || f > testDiskQuota/4096 {
				t.Errorf("made %d files under a quota of %d inodes", f, testDiskQuota/4096)
			}
			// The host's side: the store's filesystem holds the quota's
			// image file (this host's store has no project quotas), which
			// takes no more than the quota and its metadata.
			img := filepath.Join(testEnv.store.Root(), "rootfs", sb.state.RootfsKey, "disk.img")
			var st unix.Stat_t
			if err := unix.Stat(img, &st); err != nil {
				t.Fatal(err)
			}
			if used := st.Blocks * 512; used > testDiskQuota+2<<20 {
				t.Errorf("the sandbox's writes take %d bytes of the host's disk, for a quota of %d", used, testDiskQuota)
			}
			sb.Kill()
			sb.Wait()
			sb.Close()
			if left := leftBehind(t); len(left) > 0 {
				t.Errorf("left behind: %v", left)
			}
			if l := loopsBackedBy(testEnv.store.Root()); len(l) > 0 {
				t.Errorf("loop devices still attached to files of the store: %q", l)
			}
		})
	}
}

// TestDiskQuotaBad checks that a quota that cannot be honored stops the
// sandbox before it starts, and leaves nothing.
func TestDiskQuotaBad(t *testing.T) {
	for _, q := range []int64{-1, 1000} {
		_, err := New("alpine:test", opts(func(o *Options) { o.Args = []string{"true"}; o.DiskQuota = q })).Run(context.Background())
		if err == nil || !strings.Contains(err.Error(), "disk quota") {
			t.Errorf("DiskQuota %d: %v", q, err)
		}
	}
	if left := leftBehind(t); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// TestPoolDiskQuota checks that a pool's sandboxes have its quota, and
// that a sandbox cannot set its own.
func TestPoolDiskQuota(t *testing.T) {
	p := newPool(t, opts(func(o *Options) { o.DiskQuota = testDiskQuota }), 1)
	defer p.Close()
	var out bytes.Buffer
	res, err := p.New(&Options{Args: []string{"/bin/sh", "-c", "dd if=/dev/zero of=/big bs=64k count=192 2>&1 | grep -c 'No space left'"}, Stdout: &out}).Run(context.Background())
	if err != nil || strings.TrimSpace(out.String()) != "1" {
		t.Errorf("pooled sandbox writing past the quota: %+v %v %q", res, err, out.String())
	}
	if _, err := p.New(&Options{DiskQuota: 1 << 30}).Run(context.Background()); err == nil || !strings.Contains(err.Error(), "DiskQuota") {
		t.Errorf("pooled sandbox with a quota of its own: %v", err)
	}
}

// loopsBackedBy returns the loop devices whose backing files are under
// dir.
func loopsBackedBy(dir string) []string {
	var found []string
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err == nil && strings.HasPrefix(strings.TrimSpace(string(b)), dir+"/") {
			found = append(found, fmt.Sprint(strings.Split(f, "/")[3]))
		}
	}
	return found
}
