package sandbox

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/layerfs"
)

// startReady starts sb and waits until its workload has printed "ready".
func startReady(t *testing.T, sb *Sandbox, out *syncBuffer) {
	t.Helper()
	if err := sb.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sb.Close() })
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(out.String(), "ready") {
		if time.Now().After(deadline) {
			t.Fatalf("the workload never got ready: %q", out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// removeImage removes a test's committed image from the shared store.
func removeImage(t *testing.T, img *layerfs.Image) {
	t.Cleanup(func() { testEnv.store.Remove(context.Background(), img.Digest.String()) })
}

// runOutput runs ref with args and returns what it printed.
func runOutput(t *testing.T, ref string, args ...string) string {
	t.Helper()
	var out syncBuffer
	res, err := New(ref, opts(func(o *Options) { o.Args, o.Stdout, o.Stderr = args, &out, &out })).Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !res.Success() {
		t.Fatalf("%s %q: exit %d: %s", ref, args, res.ExitCode, out.String())
	}
	return out.String()
}

// What a running sandbox wrote, and deleted, is in the image Commit makes,
// with the config changes, author and message asked for; the settings it
// was started with are not.
func TestCommitRunning(t *testing.T) {
	var out syncBuffer
	sb := New("alpine:test", opts(func(o *Options) {
		o.Args = []string{"sh", "-c", "echo made > /made; rm /etc/motd; echo ready; exec sleep 1000"}
		o.Env, o.Dir = []string{"RUN_ONLY=1"}, "/tmp"
		o.Stdout, o.Stderr = &out, &out
	}))
	startReady(t, sb, &out)
	base := sb.img
	cfg := base.Config.Config.DeepCopy()
	cfg.Cmd = []string{"sh", "-c", "cat /made; echo FOO=$FOO; test ! -e /etc/motd && echo motd-gone; pwd"}
	cfg.Env = append(cfg.Env, "FOO=committed")
	img, err := sb.Commit(context.Background(), "alpine:commit-running", &CommitOptions{Author: "ann", Message: "why", Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	removeImage(t, img)
	if len(img.Layers) != len(base.Layers)+1 || !slices.Equal(img.Layers[:len(base.Layers)], base.Layers) {
		t.Errorf("layers %+v, want the image's %+v and one more", img.Layers, base.Layers)
	}
	h := img.Config.History[len(img.Config.History)-1]
	if h.Author != "ann" || h.Comment != "why" || h.CreatedBy != "berth commit" || img.Config.Author != "ann" {
		t.Errorf("history entry %+v, author %q", h, img.Config.Author)
	}
	if c := img.Config.Config; slices.Contains(c.Env, "RUN_ONLY=1") || c.WorkingDir == "/tmp" {
		t.Errorf("the run's own settings reached the image: %+v", c)
	}
	got := runOutput(t, "alpine:commit-running")
	if want := "made\nFOO=committed\nmotd-gone\n/\n"; got != want {
		t.Errorf("a sandbox of the committed image printed %q, want %q", got, want)
	}

	// Without Config: the image's own.
	img2, err := sb.Commit(context.Background(), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	removeImage(t, img2)
	if !slices.Equal(img2.Config.Config.Env, base.Config.Config.Env) || !slices.Equal(img2.Config.Config.Cmd, base.Config.Config.Cmd) {
		t.Errorf("config without CommitOptions.Config: %+v, want the image's %+v", img2.Config.Config, base.Config.Config)
	}
}

// counters reads the numbers the writer workload of
// TestCommitWhileWriting keeps in /a and /z.
func counters(t *testing.T, dir string) (a, z int) {
	t.Helper()
	read := func(name string) int {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return n
	}
	return read("a"), read("z")
}

// writer keeps writing the same count to /a and, after it, to /z, each
// replaced whole by a rename, with a large file between the two in the
// diff's order.
const writer = `head -c 16777216 /dev/urandom > /m; i=0; echo 0 > /a; echo 0 > /z; echo ready
while :; do i=$((i+1)); echo $i > /a.new; mv /a.new /a; echo $i > /z.new; mv /z.new /z; done`

// A sandbox that keeps writing is frozen while it is committed: the layer
// is one moment of its rootfs. Afterwards it runs on.
func TestCommitWhileWriting(t *testing.T) {
	var out syncBuffer
	sb := New("alpine:test", opts(func(o *Options) {
		o.Args = []string{"sh", "-c", writer}
		o.Stdout, o.Stderr = &out, &out
	}))
	startReady(t, sb, &out)
	img, err := sb.Commit(context.Background(), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	removeImage(t, img)
	// The tar holds /a before /m and /z after: read while the workload
	// ran on, /z would hold a later count than /a.
	r, err := testEnv.store.Prepare(context.Background(), "commit-writing", img, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer testEnv.store.Release(context.Background(), "commit-writing")
	// Frozen, /z holds /a's count or the one before.
	a, z := counters(t, r.Path)
	if z != a && z != a-1 {
		t.Errorf("committed /a=%d /z=%d: the rootfs changed while it was read", a, z)
	}
	assertRunsOn(t, sb)
}

// assertRunsOn fails unless sb's writer workload is still counting.
func assertRunsOn(t *testing.T, sb *Sandbox) {
	t.Helper()
	before, _ := counters(t, sb.rootfs)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if now, _ := counters(t, sb.rootfs); now > before {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the workload no longer runs after the commit: its cgroup is still frozen")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A commit cut short by its context fails, and leaves the sandbox thawed.
func TestCommitCanceled(t *testing.T) {
	var out syncBuffer
	sb := New("alpine:test", opts(func(o *Options) {
		o.Args = []string{"sh", "-c", writer}
		o.Stdout, o.Stderr = &out, &out
	}))
	startReady(t, sb, &out)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := sb.Commit(ctx, "", nil); !errors.Is(err, context.Canceled) {
		t.Errorf("commit with a cancelled context: %v, want %v", err, context.Canceled)
	}
	assertRunsOn(t, sb)
}

// The stubs the init makes to mount over (etc files, berth's filesystems,
// the caller's mounts' destinations) are one run's, and stay out of the
// committed layer; what the workload wrote beside them is in it.
func TestCommitLeavesOutMountPoints(t *testing.T) {
	sb := New("busybox:test", opts(func(o *Options) {
		o.Args = []string{"sh", "-c", "echo mine > /etc/mine; mkdir /newdir/y"}
		o.Mounts = []Mount{{Type: "tmpfs", Destination: "/newdir/x"}}
		o.KeepRootfs = true
	}))
	defer sb.Close()
	if res, err := sb.Run(context.Background()); err != nil || !res.Success() {
		t.Fatalf("run: %+v, %v", res, err)
	}
	img, err := sb.Commit(context.Background(), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	removeImage(t, img)
	r, err := testEnv.store.Prepare(context.Background(), "commit-stubs", img, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer testEnv.store.Release(context.Background(), "commit-stubs")
	for _, stub := range []string{"etc/hosts", "etc/hostname", "etc/resolv.conf", "proc", "sys", "newdir/x"} {
		if _, err := os.Lstat(filepath.Join(r.Path, stub)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("/%s in the committed image: %v, want it left out", stub, err)
		}
	}
	for _, kept := range []string{"etc/mine", "newdir/y"} {
		if _, err := os.Lstat(filepath.Join(r.Path, kept)); err != nil {
			t.Errorf("/%s, written by the workload: %v", kept, err)
		}
	}
}

// With KeepRootfs, a sandbox whose workload has ended commits, and Close
// then releases its rootfs, state directory and mounts. Without it, Commit
// after the end says the sandbox no longer runs.
func TestCommitKeepRootfs(t *testing.T) {
	sb := New("alpine:test", opts(func(o *Options) {
		o.Args = []string{"sh", "-c", "echo kept > /kept"}
		o.KeepRootfs = true
	}))
	defer sb.Close()
	if res, err := sb.Run(context.Background()); err != nil || !res.Success() {
		t.Fatalf("run: %+v, %v", res, err)
	}
	key, rootfs := "sandbox-"+sb.ID(), sb.rootfs
	if !slices.Contains(rootfsesLeft(t), key) || len(mountsUnder(t, rootfs)) == 0 {
		t.Fatalf("the kept rootfs %s is gone after the workload ended", key)
	}
	states, err := ReadStates(testEnv.stateDir)
	if i := slices.IndexFunc(states, func(st State) bool { return st.ID == sb.ID() }); i < 0 || !states[i].Exited() || !states[i].Alive() {
		t.Errorf("the record of an exited sandbox with a kept rootfs: %+v (%v), want it exited and owned", states, err)
	}
	if slices.Contains(cgroupsLeft(t, testEnv.cgroups), sb.ID()) {
		t.Errorf("the cgroup of an exited sandbox is kept with its rootfs")
	}
	img, err := sb.Commit(context.Background(), "", &CommitOptions{Config: &v1.Config{Cmd: []string{"cat", "/kept"}}})
	if err != nil {
		t.Fatal(err)
	}
	removeImage(t, img)
	if got := runOutput(t, img.Digest.String()); got != "kept\n" {
		t.Errorf("the committed image's command printed %q", got)
	}
	if err := sb.Close(); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(rootfsesLeft(t), key) {
		t.Errorf("rootfs %s left after Close", key)
	}
	if m := mountsUnder(t, rootfs); len(m) > 0 {
		t.Errorf("mounts left after Close: %v", m)
	}
	if _, err := os.Stat(filepath.Join(testEnv.stateDir, sb.ID())); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state directory after Close: %v, want it gone", err)
	}
	if _, err := sb.Commit(context.Background(), "", nil); !errors.Is(err, ErrNotRunning) {
		t.Errorf("commit after Close: %v, want %v", err, ErrNotRunning)
	}

	plain := New("alpine:test", opts(func(o *Options) { o.Args = []string{"true"} }))
	defer plain.Close()
	if _, err := plain.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, err = plain.Commit(context.Background(), "", nil)
	if !errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), "KeepRootfs") {
		t.Errorf("commit after the end without KeepRootfs: %v, want %v naming KeepRootfs", err, ErrNotRunning)
	}
	if _, err := New("alpine:test", opts(nil)).Commit(context.Background(), "", nil); !errors.Is(err, ErrNotStarted) {
		t.Errorf("commit before Start: %v, want %v", err, ErrNotStarted)
	}
}

// A handle from Open commits another's running sandbox, and a pooled
// sandbox commits as any other; a pool refuses KeepRootfs.
func TestCommitOpenAndPool(t *testing.T) {
	var out syncBuffer
	sb := New("alpine:test", opts(func(o *Options) {
		o.Args = []string{"sh", "-c", "echo opened > /opened; echo ready; exec sleep 1000"}
		o.Stdout, o.Stderr = &out, &out
	}))
	startReady(t, sb, &out)
	if st, err := findState(context.Background(), testEnv.stateDir, sb.ID()); err != nil || st.Exited() {
		t.Errorf("the record of a running sandbox: %+v (%v), want it not exited", st, err)
	}
	h, err := Open(context.Background(), sb.ID(), opts(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	img, err := h.Commit(context.Background(), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	removeImage(t, img)
	if got := runOutput(t, img.Digest.String(), "cat", "/opened"); got != "opened\n" {
		t.Errorf("image committed through Open: %q", got)
	}

	p, err := NewPool(context.Background(), "alpine:test", opts(nil), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var pout syncBuffer
	ps := p.New(&Options{Args: []string{"sh", "-c", "echo pooled > /pooled; echo ready; exec sleep 1000"}, Stdout: &pout, Stderr: &pout})
	startReady(t, ps, &pout)
	img, err = ps.Commit(context.Background(), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	removeImage(t, img)
	if got := runOutput(t, img.Digest.String(), "cat", "/pooled"); got != "pooled\n" {
		t.Errorf("image committed from a pool's sandbox: %q", got)
	}
	ps.Close()

	if err := p.New(&Options{KeepRootfs: true}).Start(context.Background()); !errors.Is(err, errPoolKeepRootfs) {
		t.Errorf("a pool's sandbox with KeepRootfs: %v, want %v", err, errPoolKeepRootfs)
	}
	if _, err := NewPool(context.Background(), "alpine:test", opts(func(o *Options) { o.KeepRootfs = true }), 1); !errors.Is(err, errPoolKeepRootfs) {
		t.Errorf("a pool with KeepRootfs: %v, want %v", err, errPoolKeepRootfs)
	}
}

// storageOnly hides every method of a store but Storage's.
type storageOnly struct{ Storage }

// Storage that cannot commit makes Commit fail with ErrUnsupported.
func TestCommitUnsupported(t *testing.T) {
	var out syncBuffer
	sb := New("alpine:test", opts(func(o *Options) {
		o.Storage = storageOnly{testEnv.store}
		o.Args = []string{"sh", "-c", "echo ready; exec sleep 1000"}
		o.Stdout, o.Stderr = &out, &out
	}))
	startReady(t, sb, &out)
	if _, err := sb.Commit(context.Background(), "", nil); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("commit with storage that cannot: %v, want %v", err, errors.ErrUnsupported)
	}
}

// keepRootfsProcess is a host program that TestKeepRootfsOwnerKilled
// kills: it runs a sandbox with KeepRootfs to its end, says so, and waits.
func keepRootfsProcess() int {
	store, err := layerfs.Open(os.Getenv("BERTH_TEST_STORE"), nil)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	cgm, err := cgroup.NewManager(cgroup.Options{Parent: os.Getenv("BERTH_TEST_CGROUP_PARENT")})
	if err != nil {
		fmt.Println(err)
		return 1
	}
	sb := New("alpine:test", &Options{Storage: store, Cgroups: cgm, StateDir: os.Getenv("BERTH_TEST_STATE"),
		Args: []string{"sh", "-c", "echo kept > /kept"}, KeepRootfs: true})
	if _, err := sb.Run(context.Background()); err != nil {
		fmt.Println(err)
		return 1
	}
	fmt.Println("exited", sb.ID())
	select {}
}

// A rootfs kept for a live owner survives Recover; once its owner is
// killed, Recover reclaims it, with its state directory and mounts.
func TestKeepRootfsOwnerKilled(t *testing.T) {
	stateDir := t.TempDir()
	parent := fmt.Sprintf("berth-test-%d-keep", os.Getpid())
	cgm, err := cgroup.NewManager(cgroup.Options{Parent: parent})
	if err != nil {
		t.Fatal(err)
	}
	defer cgm.RemoveParent()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "BERTH_TEST_HOST=keeprootfs", "BERTH_TEST_STORE="+testEnv.store.Root(),
		"BERTH_TEST_STATE="+stateDir, "BERTH_TEST_CGROUP_PARENT="+parent)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	line, _ := bufio.NewReader(out).ReadString('\n')
	id, ok := strings.CutPrefix(strings.TrimSpace(line), "exited ")
	if !ok {
		t.Fatalf("host process: %q", line)
	}
	key := "sandbox-" + id
	o := &Options{Storage: testEnv.store, Cgroups: cgm, StateDir: stateDir, Networks: testEnv.nets}
	if _, err := Recover(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(rootfsesLeft(t), key) {
		t.Fatalf("Recover reclaimed the rootfs %s kept for a live owner", key)
	}
	if len(mountsUnder(t, filepath.Join(testEnv.store.Root(), "rootfs", key))) == 0 {
		t.Fatalf("the kept rootfs %s is not mounted", key)
	}

	cmd.Process.Kill()
	cmd.Wait()
	res, err := Recover(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(res.Sandboxes, id) {
		t.Errorf("Recover after the owner was killed: %+v, want sandbox %s reclaimed", res, id)
	}
	if slices.Contains(rootfsesLeft(t), key) {
		t.Errorf("rootfs %s left after Recover", key)
	}
	if m := mountsUnder(t, filepath.Join(testEnv.store.Root(), "rootfs", key)); len(m) > 0 {
		t.Errorf("mounts left after Recover: %v", m)
	}
	if m := mountsUnder(t, stateDir); len(m) > 0 {
		t.Errorf("mounts left in the state directory: %v", m)
	}
	if left := stateLeft(t, stateDir); len(left) > 0 {
		t.Errorf("state left after Recover: %v", left)
	}
}

// BenchmarkCommit commits a running sandbox that wrote 8 MiB of random
// bytes and 100 small files: freeze, diff, gzip, store, thaw.
func BenchmarkCommit(b *testing.B) {
	var out syncBuffer
	sb := New("alpine:test", opts(func(o *Options) {
		o.Args = []string{"sh", "-c", "head -c 8388608 /dev/urandom > /big; mkdir /small; for i in $(seq 100); do echo $i > /small/$i; done; echo ready; exec sleep 1000"}
		o.Stdout, o.Stderr = &out, &out
	}))
	if err := sb.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer sb.Close()
	for !strings.Contains(out.String(), "ready") {
		time.Sleep(5 * time.Millisecond)
	}
	for b.Loop() {
		img, err := sb.Commit(context.Background(), "", nil)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		testEnv.store.Remove(context.Background(), img.Digest.String())
		b.StartTimer()
	}
}
