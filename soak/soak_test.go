//go:build soak

package soak

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// soak is one soak test's private world and what happened in it.
type soak struct {
	t      *testing.T
	berth  string // the command under test
	dir    string // everything on disk is under it
	root   string // the image store
	state  string // sandboxes' state directory
	parent string // the cgroup parent
	// network is the named network that network runs join; cniName is
	// its name as CNI knows it (in IPAM directories and rule comments),
	// bridge its device.
	network, cniName, bridge string
	busybox                  string // an OCI layout to import
	portBase                 int    // published host ports start here

	mu     sync.Mutex
	rng    *rand.Rand
	stats  stats
	seen   map[string]bool // sandbox IDs seen in the state directory
	ports  map[string]bool // veths seen on the bridge
	sample map[string]int  // unexpected failures' first lines, counted
}

func (s *soak) intN(n int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rng.IntN(n)
}

// chance returns true with probability p.
func (s *soak) chance(p float64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rng.Float64() < p
}

// delay returns a random duration below max.
func (s *soak) delay(max time.Duration) time.Duration {
	return time.Duration(s.intN(int(max)))
}

func (s *soak) count(f func(*stats)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(&s.stats)
}

func TestSoak(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the soak test runs sandboxes: it needs root")
	}
	runs := envInt(t, "BERTH_SOAK_RUNS", 2000)
	if testing.Short() && os.Getenv("BERTH_SOAK_RUNS") == "" {
		runs = 60
	}
	workers := envInt(t, "BERTH_SOAK_CONCURRENCY", 4)
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("BERTH_SOAK_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("BERTH_SOAK_SEED=%q: %v", v, err)
		}
		seed = n
	}
	t.Logf("soak: %d operations, %d at once, seed %d", runs, workers, seed)

	s := setUp(t, seed)
	start := time.Now()
	s.drive(runs, workers)
	s.stats.Runs = time.Since(start)

	s.collect()
	left := s.audit()
	left = append(left, s.removeNetwork()...)
	s.stats.Wall = time.Since(start)
	s.report(left)
	if len(left) > 0 {
		t.Errorf("the soak left %d things behind:\n\t%s", len(left), strings.Join(left, "\n\t"))
	}
	if n := s.hung(); n > 0 {
		t.Errorf("%d berth commands hung until the soak killed them", n)
	}
	if !s.stats.Converged {
		t.Errorf("berth gc did not converge in %d passes", s.stats.GCPasses)
	}
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}

// setUp makes the soak's private store, state directory, cgroup parent
// and network, and imports the images the runs use.
func setUp(t *testing.T, seed uint64) *soak {
	dir, err := os.MkdirTemp("/var/tmp", "berth-soak-")
	if err != nil {
		t.Fatal(err)
	}
	tag := fmt.Sprintf("soak%d", os.Getpid()%100000)
	s := &soak{
		t: t, dir: dir,
		root:     filepath.Join(dir, "store"),
		state:    filepath.Join(dir, "state"),
		parent:   "berth-" + tag,
		network:  tag,
		cniName:  "berth-" + tag,
		bridge:   "berth-" + tag,
		portBase: 20000 + os.Getpid()%20000,
		rng:      rand.New(rand.NewPCG(seed, seed>>1)),
		seen:     map[string]bool{},
		ports:    map[string]bool{},
		sample:   map[string]int{},
	}
	t.Cleanup(s.cleanUp)
	s.berth = os.Getenv("BERTH_SOAK_BINARY")
	if s.berth == "" {
		s.berth = filepath.Join("..", "bin", "berth")
	}
	if s.berth, err = filepath.Abs(s.berth); err == nil {
		_, err = os.Stat(s.berth)
	}
	if err != nil {
		t.Fatalf("the berth command: %v (make soak builds it; or set BERTH_SOAK_BINARY)", err)
	}
	images := filepath.Join("..", "..", "shared", "images")
	alpine := filepath.Join(images, "alpine-minirootfs-3.20.3-x86_64.tar.gz")
	s.busybox = filepath.Join(images, "busybox-1.38-musl-oci")
	for _, p := range []string{alpine, s.busybox} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("test image: %v (the soak needs ../shared/images beside the repository)", err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "exports"), 0o700); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, args := range [][]string{
		{"image", "import", alpine, "--name", "soak:alpine"},
		{"image", "import", s.busybox, "--name", "soak:busybox"},
		{"network", "create", s.network},
	} {
		if out, err := s.command(ctx, args...).CombinedOutput(); err != nil {
			t.Fatalf("berth %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	t.Logf("soak: store %s, state %s, cgroup parent %s, network %s (bridge %s)", s.root, s.state, s.parent, s.network, s.bridge)
	s.proveAudit()
	return s
}

// command returns berth with the soak's private store, state directory
// and cgroup parent.
func (s *soak) command(ctx context.Context, args ...string) *exec.Cmd {
	global := []string{"--root", s.root, "--state", s.state, "--cgroup-parent", s.parent}
	cmd := exec.CommandContext(ctx, s.berth, append(global, args...)...)
	cmd.Env = append(os.Environ(), "BERTH_ROOT="+s.root)
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// drive runs n operations, workers at a time, while chaos kills inits and
// damages records, and waits for them all.
func (s *soak) drive(n, workers int) {
	ops := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range ops {
				s.operate(i)
			}
		}()
	}
	stop := make(chan struct{})
	chaosDone := make(chan struct{})
	go func() {
		defer close(chaosDone)
		s.chaos(stop)
	}()
	for i := range n {
		ops <- i
		if (i+1)%100 == 0 {
			s.mu.Lock()
			cli, inits, damages := s.killedCLIs(), s.stats.InitKills, s.stats.damages()
			s.mu.Unlock()
			s.t.Logf("soak: %d/%d operations, %d CLI kills, %d init kills, %d damages", i+1, n, cli, inits, damages)
		}
	}
	close(ops)
	wg.Wait()
	close(stop)
	<-chaosDone
}
