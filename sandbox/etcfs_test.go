package sandbox

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/netplug"
	"github.com/berth-dev/berth/security"
)

// etcStateDir returns a state directory of the test's own, so that what
// it counts is its sandboxes' alone. Its parent lets Strict's user
// namespace root through, as the host's /run does.
func etcStateDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp(testEnv.dir, "etc-state-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// fsUsed returns the bytes in use on the filesystem holding dir.
func fsUsed(t *testing.T, dir string) int64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Blocks-st.Bfree) * st.Bsize
}

var etcPresets = []struct {
	name string
	sec  func() *security.Config
}{{"Default", security.Default}, {"Strict", security.Strict}}

// A workload that writes without end into /etc/hosts, /etc/hostname or
// /etc/resolv.conf fills its own small filesystem, not the host's /run.
// A tmpfs of the test's own stands in for /run, so that the host's is
// never at risk.
func TestEtcFilesBounded(t *testing.T) {
	run := filepath.Join(testEnv.dir, "etc-run")
	if err := os.Mkdir(run, 0o711); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(run)
	if err := unix.Mount("tmpfs", run, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=16m,mode=0711"); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(run, unix.MNT_DETACH)

	for _, p := range etcPresets {
		t.Run(p.name, func(t *testing.T) {
			ctx := context.Background()
			stateDir := filepath.Join(run, p.name)
			sb := New("alpine:test", opts(func(o *Options) {
				o.StateDir = stateDir
				o.Security = p.sec()
				o.Args = []string{"sleep", "1000"}
			}))
			if err := sb.Start(ctx); err != nil {
				t.Fatal(err)
			}
			defer sb.Close()
			before := fsUsed(t, run)
			for _, f := range etcFiles {
				var stderr bytes.Buffer
				res, err := sb.Exec(ctx, &ExecOptions{Args: []string{"sh", "-c", "cat /dev/zero >> /etc/" + f}, Stderr: &stderr})
				if err != nil {
					t.Fatal(err)
				}
				if res.Success() {
					t.Errorf("writing /dev/zero into /etc/%s ended well", f)
				}
				// Strict's root is not the files' owner and may not
				// write them at all.
				if p.name == "Default" && !strings.Contains(stderr.String(), "No space left on device") {
					t.Errorf("/etc/%s: %q, want ENOSPC", f, stderr.String())
				}
			}
			if grew := fsUsed(t, run) - before; grew > 2*etcFSSize {
				t.Errorf("the state directory's filesystem grew by %d bytes, more than the etc files' cap %d", grew, etcFSSize)
			}
			var total int64
			for _, f := range etcFiles {
				if fi, err := os.Stat(etcFile(sb.stateDir(), f)); err == nil {
					total += fi.Size()
				}
			}
			if total > etcFSSize {
				t.Errorf("the etc files hold %d bytes, more than the cap %d", total, etcFSSize)
			}
			if err := sb.Close(); err != nil {
				t.Error(err)
			}
			if m := mountsUnder(t, stateDir); len(m) > 0 {
				t.Errorf("mounts left: %v", m)
			}
		})
	}
}

// The files keep working on their own filesystem: the host name, name
// lookups through /etc/hosts, a line appended to it, the resolver's file;
// on no network, the host's, a bridge and a joined namespace.
func TestEtcFilesWork(t *testing.T) {
	ctx := context.Background()
	bridge := defaultNetwork(t)
	web := New("busybox:test", opts(func(o *Options) { o.Network = bridge; o.Args = []string{"sleep", "1000"} }))
	if err := web.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer web.Close()
	networks := []struct {
		name string
		set  func(*Options)
	}{
		{"none", func(*Options) {}},
		{"host", func(o *Options) { o.Network = netplug.Host() }},
		{"bridge", func(o *Options) { o.Network = bridge }},
		{"joined", func(o *Options) { o.JoinNetwork = web.NetworkNamespace() }},
	}
	const script = `set -e
cat /etc/hostname
getent hosts etc-test | awk '{print $2}'
test -r /etc/resolv.conf
if echo "10.9.8.7 appended.test" >> /etc/hosts 2>/dev/null; then getent hosts appended.test | awk '{print $1}'; else echo append-refused; fi
`
	for _, p := range etcPresets {
		for _, n := range networks {
			if p.name == "Strict" && (n.name == "host" || n.name == "joined") {
				continue // a user namespace cannot have the host's network or join one it does not own
			}
			t.Run(p.name+"/"+n.name, func(t *testing.T) {
				res, out, errOut := run(t, "alpine:test", opts(func(o *Options) {
					o.Security = p.sec()
					o.Hostname = "etc-test"
					o.Args = []string{"sh", "-c", script}
					n.set(o)
				}))
				// Strict's root is not the files' owner on the host,
				// as before they had a filesystem of their own.
				appended := "10.9.8.7\n"
				if p.name == "Strict" {
					appended = "append-refused\n"
				}
				if want := "etc-test\netc-test\n" + appended; !res.Success() || out != want {
					t.Errorf("got %q (%s), want %q", out, errOut, want)
				}
			})
		}
	}
}

// netplug rewrites a named network's hosts files in place as sandboxes
// come and go; the rewrite reaches a running sandbox's /etc/hosts.
func TestEtcHostsKeptCurrent(t *testing.T) {
	ctx := context.Background()
	n, err := testEnv.nets.Create(ctx, "sbtest-etc", &netplug.NetworkOptions{Subnet: netip.MustParsePrefix("10.216.37.0/24")})
	if err != nil {
		t.Fatal(err)
	}
	defer testEnv.nets.Remove(ctx, "sbtest-etc")
	start := func(name string) *Sandbox {
		sb := New("alpine:test", opts(func(o *Options) { o.Network = n; o.Hostname = name; o.Args = []string{"sleep", "1000"} }))
		if err := sb.Start(ctx); err != nil {
			t.Fatal(err)
		}
		return sb
	}
	lookup := func(sb *Sandbox, name string) string {
		var out bytes.Buffer
		sb.Exec(ctx, &ExecOptions{Args: []string{"getent", "hosts", name}, Stdout: &out})
		return strings.TrimSpace(out.String())
	}
	alpha := start("alpha")
	defer alpha.Close()
	beta := start("beta")
	defer beta.Close()
	betaIP := beta.Attachment().IPs[0].Addr().String()
	if got := lookup(alpha, "beta"); !strings.HasPrefix(got, betaIP+" ") {
		t.Errorf("alpha looks beta up as %q, want %s", got, betaIP)
	}
	if err := beta.Close(); err != nil {
		t.Fatal(err)
	}
	if got := lookup(alpha, "beta"); got != "" {
		t.Errorf("alpha still finds beta, closed: %q", got)
	}
}

// Every way a sandbox ends unmounts its etc files' filesystem: Close,
// starts that fail before and after the init runs, and a pool's sandboxes,
// used and unused. (TestRecoverAfterHostKilled checks Recover.)
func TestEtcFilesUnmounted(t *testing.T) {
	ctx := context.Background()
	stateDir := etcStateDir(t)
	withState := func(extra func(*Options)) *Options {
		return opts(func(o *Options) { o.StateDir = stateDir; extra(o) })
	}
	checkNoneLeft := func(t *testing.T) {
		t.Helper()
		if m := mountsUnder(t, stateDir); len(m) > 0 {
			t.Errorf("mounts left: %v", m)
		}
		if left := stateLeft(t, stateDir); len(left) > 0 {
			t.Errorf("state left: %v", left)
		}
	}

	t.Run("Close", func(t *testing.T) {
		sb := New("alpine:test", withState(func(o *Options) { o.Args = []string{"sleep", "1000"} }))
		if err := sb.Start(ctx); err != nil {
			t.Fatal(err)
		}
		if m := mountsUnder(t, stateDir); len(m) != 1 || m[0] != etcDir(sb.stateDir()) {
			t.Errorf("mounts while running: %v, want the etc files'", m)
		}
		if err := sb.Close(); err != nil {
			t.Fatal(err)
		}
		checkNoneLeft(t)
	})
	t.Run("FailedSpec", func(t *testing.T) {
		// The bind mount's source is checked after the etc files are
		// written.
		sb := New("alpine:test", withState(func(o *Options) {
			o.Args = []string{"true"}
			o.Mounts = []Mount{{Source: filepath.Join(stateDir, "missing"), Destination: "/data"}}
		}))
		if err := sb.Start(ctx); err == nil {
			sb.Close()
			t.Fatal("a missing bind source started")
		}
		checkNoneLeft(t)
	})
	t.Run("FailedInit", func(t *testing.T) {
		sb := New("alpine:test", withState(func(o *Options) { o.Args = []string{"/no/such/program"} }))
		if err := sb.Start(ctx); err == nil {
			sb.Wait()
		}
		sb.Close()
		checkNoneLeft(t)
	})
	t.Run("Pool", func(t *testing.T) {
		p := newPool(t, withState(func(o *Options) {}), 2)
		sb := p.New(&Options{Args: []string{"true"}})
		if _, err := sb.Run(ctx); err != nil {
			t.Error(err)
		}
		if err := p.Close(); err != nil {
			t.Error(err)
		}
		checkNoneLeft(t)
	})
}

// BenchmarkEtcFiles measures what a sandbox's etc files cost the host
// from their writing to their removal, on a filesystem of their own
// ("own") and as plain files of the state directory ("plain", as before),
// with a tmpfs standing in for /run. Wall time on a busy machine is
// mostly waiting; the CPU time the process spent is the cost.
func BenchmarkEtcFiles(b *testing.B) {
	run := b.TempDir()
	if err := unix.Mount("tmpfs", run, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=16m,mode=0711"); err != nil {
		b.Fatal(err)
	}
	defer unix.Unmount(run, unix.MNT_DETACH)
	for _, own := range []bool{false, true} {
		name := "plain"
		if own {
			name = "own"
		}
		b.Run(name, func(b *testing.B) {
			cpu0 := processCPU(b)
			for i := 0; i < b.N; i++ {
				stateDir := filepath.Join(run, "sandbox")
				if err := os.Mkdir(stateDir, 0o711); err != nil {
					b.Fatal(err)
				}
				var err error
				if own {
					err = mountEtcFS(stateDir, "")
				} else {
					err = os.Mkdir(etcDir(stateDir), 0o711)
				}
				if err != nil {
					b.Fatal(err)
				}
				for _, f := range etcFiles {
					if err := os.WriteFile(etcFile(stateDir, f), []byte("127.0.0.1\tlocalhost\n"), 0o644); err != nil {
						b.Fatal(err)
					}
				}
				if err := removeStateDir(stateDir); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64((processCPU(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
}

// processCPU returns the user and system time the process has used.
func processCPU(b *testing.B) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
