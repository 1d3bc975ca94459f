package sandbox

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/layerfs"
	"github.com/berth-dev/berth/security"
)

// A request adds environment and mounts to a pooled sandbox: its variables
// join the pool's, replacing those of the same name, and its bind mount,
// volume and tmpfs are there for its workload, with nosuid and nodev, and
// for no other sandbox of the pool. The default filter, loaded while the
// sandbox waited, refuses mount calls: PID 1 makes them.
func TestPoolRequestEnvAndMounts(t *testing.T) {
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "hello"), []byte("from the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := newPool(t, opts(func(o *Options) {
		o.Env = []string{"FROM_POOL=1", "OVERRIDDEN=pool"}
	}), 1)
	if p.earlyProg == nil {
		t.Error("the default filter is not loaded while the sandbox waits")
	}
	volume := "pool-request-" + strings.ReplaceAll(t.Name(), "/", "-")
	defer testEnv.store.RemoveVolume(context.Background(), volume)
	var out, errOut bytes.Buffer
	res, err := p.New(&Options{
		Env: []string{"OVERRIDDEN=request", "FROM_REQUEST=2"},
		Mounts: []Mount{
			{Source: src, Destination: "/data", ReadOnly: true},
			{Type: "volume", Source: volume, Destination: "/srv/vol"},
			{Type: "tmpfs", Destination: "/scratch", Options: "size=1m"},
		},
		Args: []string{"/bin/sh", "-c", `echo "$FROM_POOL $OVERRIDDEN $FROM_REQUEST"; cat /data/hello
touch /data/x 2>/dev/null && echo data writable
echo kept > /srv/vol/file && touch /scratch/file && echo writes ok
grep -E ' /(data|srv/vol|scratch) ' /proc/self/mountinfo | while read -r _ _ _ _ dst opts _; do echo "$dst $opts"; done | sort`},
		Stdout: &out, Stderr: &errOut,
	}).Run(context.Background())
	if err != nil || !res.Success() {
		t.Fatal(res, err, errOut.String())
	}
	want := "1 request 2\nfrom the host\nwrites ok\n"
	if !strings.HasPrefix(out.String(), want) {
		t.Fatalf("stdout %q, want it to start with %q", out.String(), want)
	}
	mounts := strings.Split(strings.TrimSpace(strings.TrimPrefix(out.String(), want)), "\n")
	if len(mounts) != 3 {
		t.Fatalf("mounts: %q", mounts)
	}
	for _, m := range mounts {
		dst, o, _ := strings.Cut(m, " ")
		flags := strings.Split(o, ",")
		has := func(f string) bool { return strings.Contains(","+o+",", ","+f+",") }
		if !has("nosuid") || !has("nodev") || has("ro") != (dst == "/data") {
			t.Errorf("%s mounted %v", dst, flags)
		}
	}
	dir, err := testEnv.store.Volume(context.Background(), volume)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "file"))
	if err != nil || string(b) != "kept\n" {
		t.Errorf("the volume's file: %q %v", b, err)
	}
	// A running sandbox's request volume is recorded as in use, before
	// it is bound. (Ready: the last one is torn down, and no longer
	// counts.)
	if err := p.Ready(context.Background()); err != nil {
		t.Fatal(err)
	}
	running := p.New(&Options{Args: []string{"sleep", "30"}, Mounts: []Mount{{Type: "volume", Source: volume, Destination: "/srv/vol"}}})
	if err := running.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	err = testEnv.store.RemoveUnusedVolume(context.Background(), volume, VolumeUsers(testEnv.stateDir, testEnv.store))
	if !errors.Is(err, layerfs.ErrVolumeInUse) || !strings.Contains(err.Error(), running.ID()) {
		t.Errorf("removing the volume a running pooled sandbox uses: %v", err)
	}
	running.Close()
	// The next sandbox has the pool's configuration only.
	out.Reset()
	res, err = p.New(&Options{Args: []string{"/bin/sh", "-c", `echo "$FROM_POOL $OVERRIDDEN $FROM_REQUEST"; ls /data /srv/vol /scratch 2>&1 | wc -l`}, Stdout: &out}).Run(context.Background())
	if err != nil || !res.Success() || out.String() != "1 pool \n3\n" {
		t.Errorf("the next sandbox: %q %+v %v", out.String(), res, err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if left := leftBehind(t); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// What a pool's sandbox cannot take is refused, naming the field, before a
// sandbox is taken; a mount that would leave the image's own filesystem
// is refused by its PID 1 when only the sandbox can tell, through a link
// of the image into one of the pool's mounts.
func TestPoolRequestRefused(t *testing.T) {
	src := t.TempDir()
	p := newPool(t, opts(func(o *Options) {
		o.Mounts = []Mount{{Type: "tmpfs", Destination: "/run"}}
	}), 1)
	defer p.Close()
	for _, c := range []struct {
		name string
		o    *Options
		want string
	}{
		{"fixed", &Options{Hostname: "other", DiskQuota: 1 << 20}, "options fixed by the pool for all its sandboxes: Hostname, DiskQuota"},
		{"unsupported", &Options{Name: "x", Labels: map[string]string{"a": "b"}, Detachable: true}, "options a pool's sandbox does not take: Name, Labels, Detachable"},
		{"proc", &Options{Mounts: []Mount{{Source: src, Destination: "/proc/meminfo"}}}, "Mounts[0]: destination \"/proc/meminfo\" is in the sandbox's mount at /proc"},
		{"dev", &Options{Mounts: []Mount{{Type: "tmpfs", Destination: "/dev/x"}}}, "Mounts[0]: destination \"/dev/x\" is in the sandbox's mount at /dev"},
		{"etc file", &Options{Mounts: []Mount{{Source: src, Destination: "/etc/hosts"}}}, "destination \"/etc/hosts\" is in the sandbox's mount at /etc/hosts"},
		{"pool's mount", &Options{Mounts: []Mount{{Type: "tmpfs", Destination: "/run/sub"}}}, "destination \"/run/sub\" is in the sandbox's mount at /run"},
		{"image link to /proc", &Options{Mounts: []Mount{{Source: src, Destination: "/etc/mtab"}}}, "leads, through the image's symbolic links, to /proc/mounts"},
		{"nested", &Options{Mounts: []Mount{{Type: "tmpfs", Destination: "/a/b"}, {Type: "tmpfs", Destination: "/a"}}}, `Mounts[0]: destination "/a/b" is in Mounts[1] at "/a"`},
		{"too many", &Options{Mounts: make([]Mount, MaxRequestMounts+1)}, "Mounts: 65 for a pool's sandbox, at most 64"},
		{"root", &Options{Mounts: []Mount{{Source: src, Destination: "/"}}}, "Mounts[0]: destination /:"},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := p.Stats()
			_, err := p.New(c.o).Run(context.Background())
			if !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%v, want ErrInvalidOptions saying %q", err, c.want)
			}
			if after := p.Stats(); c.name != "image link to /proc" && after.Hits+after.Misses != before.Hits+before.Misses {
				t.Errorf("a sandbox was taken for a refused request: %+v, then %+v", before, after)
			}
		})
	}
	// /var/run is the image's link to /run, where the pool mounts a
	// tmpfs: only the sandbox sees that.
	var errOut bytes.Buffer
	_, err := p.New(&Options{Args: []string{"true"}, Stderr: &errOut, Mounts: []Mount{{Source: src, Destination: "/var/run/sub"}}}).Run(context.Background())
	if !errors.Is(err, ErrSetup) || !strings.Contains(err.Error(), "leads out of the image's own filesystem") {
		t.Errorf("a mount through the image's link into the pool's tmpfs: %v", err)
	}
	p.Close()
	if left := leftBehind(t); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// Under a user namespace a request's mounts are refused, saying why.
func TestPoolRequestMountsUserNamespace(t *testing.T) {
	p := newPool(t, opts(func(o *Options) { o.Security = security.Strict() }), 1)
	defer p.Close()
	_, err := p.New(&Options{Mounts: []Mount{{Type: "tmpfs", Destination: "/scratch"}}}).Run(context.Background())
	if !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), "user namespace") {
		t.Errorf("a request's mount under a user namespace: %v", err)
	}
	if s := p.Stats(); s.Hits+s.Misses != 0 {
		t.Errorf("a sandbox was taken: %+v", s)
	}
}

// A burst of starts larger than the pool finds it empty: Stats counts the
// misses, and the pool says once, not at every miss, that it cannot keep
// up. Waiting rather than building serves the burst too. Nothing is left.
func TestPoolStatsBurst(t *testing.T) {
	var logged syncBuffer
	p := newPool(t, opts(func(o *Options) {
		o.Logger = slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}), 1)
	ctx := context.Background()
	if err := p.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	if s := p.Stats(); s.Size != 1 || s.Ready != 1 || s.Builds != 1 || s.Hits+s.Misses+s.BuildFailures != 0 {
		t.Errorf("a new pool: %+v", s)
	}
	burst := func(n int) {
		t.Helper()
		var wg sync.WaitGroup
		go_ := make(chan struct{})
		errs := make(chan error, n)
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-go_
				res, err := p.New(&Options{Args: []string{"true"}}).Run(ctx)
				if err == nil && !res.Success() {
					err = errors.New("failed")
				}
				errs <- err
			}()
		}
		close(go_)
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
	}
	burst(5)
	s := p.Stats()
	if s.Hits+s.Misses != 5 || s.Misses == 0 || s.Hits == 0 || s.Builds < 5 || s.BuildFailures != 0 {
		t.Errorf("after a burst of 5 on a pool of 1: %+v", s)
	}
	if n := strings.Count(logged.String(), "cannot keep up"); n != 1 {
		t.Errorf("warned %d times, want once:\n%s", n, logged.String())
	}
	if !strings.Contains(logged.String(), "building one on the start's path") {
		t.Errorf("the warning: %s", logged.String())
	}

	p.SetWhenEmpty(WaitWhenEmpty)
	if err := p.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	before := p.Stats()
	burst(4)
	s = p.Stats()
	if s.Hits+s.Misses != before.Hits+before.Misses+4 || s.Misses == before.Misses {
		t.Errorf("after a burst of 4, waiting: %+v, before %+v", s, before)
	}
	p.Close()
	if left := leftBehind(t); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// BenchmarkStartExitPoolRequestMount is BenchmarkStartExitPool with a bind
// mount and a variable of the request's own: what the third message and
// PID 1's mount add to a pooled start.
func BenchmarkStartExitPoolRequestMount(b *testing.B) {
	pool, err := NewPool(context.Background(), "alpine:test", opts(nil), 2)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	src := b.TempDir()
	time.Sleep(100 * time.Millisecond)
	timeStartExit(b, 20*time.Millisecond, func() *Sandbox {
		return pool.New(&Options{Args: []string{"true"}, Env: []string{"JOB=1"}, Mounts: []Mount{{Source: src, Destination: "/data", ReadOnly: true}}})
	})
}

// A start that waits for the pool's next sandbox is not left waiting when
// the pool cannot build one: it builds its own, whose error says why.
func TestPoolWaitWhenBuildFails(t *testing.T) {
	src := t.TempDir()
	p := newPool(t, opts(func(o *Options) {
		o.Mounts = []Mount{{Source: src, Destination: "/x"}}
	}), 1)
	defer p.Close()
	p.SetWhenEmpty(WaitWhenEmpty)
	// The sandbox built already has its mount; the next ones cannot.
	if err := os.Remove(src); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if res, err := p.New(&Options{Args: []string{"true"}}).Run(ctx); err != nil || !res.Success() {
		t.Fatalf("the sandbox built before the source went: %+v %v", res, err)
	}
	_, err := p.New(&Options{Args: []string{"true"}}).Run(ctx)
	if err == nil || !strings.Contains(err.Error(), src) || ctx.Err() != nil {
		t.Errorf("a start waiting on a pool that cannot build: %v (context: %v)", err, ctx.Err())
	}
	if s := p.Stats(); s.BuildFailures == 0 || s.Misses != 1 || s.Hits != 1 {
		t.Errorf("stats: %+v", s)
	}
	p.Close()
	if left := leftBehind(t); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}
