package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/netplug"
	"github.com/berth-dev/berth/security"
)

// noPool is a NamespacePool that is never asked: options naming one are
// refused before.
type noPool struct{}

func (noPool) Acquire(context.Context, string) (string, *netplug.Attachment, func(), error) {
	return "", nil, nil, errors.New("noPool: asked")
}

// bridgeStub stands for a network that publishes ports; options naming it
// are refused before it is asked.
type bridgeStub struct{}

func (bridgeStub) Attach(context.Context, string, string, *netplug.AttachOptions) (*netplug.Attachment, error) {
	return nil, errors.New("bridgeStub: asked")
}
func (bridgeStub) Detach(context.Context, string, string) error { return nil }

// nonsenseOptions are options that make no sense, each with what its error
// must say.
var nonsenseOptions = []struct {
	name string
	set  func(*Options)
	want string
}{
	{"empty program", func(o *Options) { o.Entrypoint, o.Args = []string{}, []string{""} }, "Args[0] is empty"},
	{"empty entrypoint program", func(o *Options) { o.Entrypoint = []string{""} }, "Entrypoint[0] is empty"},
	{"negative grace", func(o *Options) { o.Grace = -time.Second }, "Grace -1s is negative"},
	{"NUL in an argument", func(o *Options) { o.Args = []string{"echo", "a\x00b"} }, "Args[1] \"a\\x00b\" contains a NUL byte"},
	{"env without =", func(o *Options) { o.Env = []string{"FOO"} }, `Env[0] "FOO" is not NAME=VALUE`},
	{"env with an empty name", func(o *Options) { o.Env = []string{"A=1", "=value"} }, `Env[1] "=value" has an empty name`},
	{"NUL in env", func(o *Options) { o.Env = []string{"A=x\x00y"} }, `Env[0] "A" contains a NUL byte`},
	{"relative Dir", func(o *Options) { o.Dir = "tmp" }, `Dir: "tmp" is not an absolute path`},
	{".. in Dir", func(o *Options) { o.Dir = "/a/../b" }, `Dir: "/a/../b" contains ".."`},
	{"User with two colons", func(o *Options) { o.User = "a:b:c" }, "want user[:group]"},
	{"User without a user", func(o *Options) { o.User = ":wheel" }, "want user[:group]"},
	{"host name with a newline", func(o *Options) { o.Hostname = "h\n6.6.6.6 evil" }, "Hostname: \"h\\n6.6.6.6 evil\": a host name has only"},
	{"long host name", func(o *Options) { o.Hostname = strings.Repeat("h", 65) }, "longer than 64 bytes"},
	{"host name of 5 KB", func(o *Options) { o.Hostname = strings.Repeat("h", 5000) }, "… (5000 bytes) is longer than 64 bytes"},
	{"host name starting with -", func(o *Options) { o.Hostname = "-h" }, "starts with a letter or digit"},
	{"relative destination", func(o *Options) { o.Mounts = []Mount{{Type: "tmpfs", Destination: "mnt"}} }, `Mounts[0]: destination "mnt" is not an absolute path`},
	{".. in destination", func(o *Options) { o.Mounts = []Mount{{Type: "tmpfs", Destination: "/mnt/../proc"}} }, `contains ".."`},
	{"mount on /", func(o *Options) { o.Mounts = []Mount{{Source: "/tmp", Destination: "/"}} }, "destination /: the image is the root"},
	{"bind on /proc", func(o *Options) { o.Mounts = []Mount{{Source: "/tmp", Destination: "/proc"}} }, "destination /proc: the sandbox's own /proc goes there"},
	{"tmpfs on /proc/", func(o *Options) { o.Mounts = []Mount{{Type: "tmpfs", Destination: "/proc/"}} }, "destination /proc: the sandbox's own"},
	{"bind on /sys", func(o *Options) { o.Mounts = []Mount{{Source: "/sys", Destination: "/sys"}} }, "destination /sys: the sandbox's own"},
	{"bind on /dev", func(o *Options) { o.Mounts = []Mount{{Source: "/dev", Destination: "/dev"}} }, "destination /dev: the sandbox's own"},
	{"tmpfs on /dev/pts", func(o *Options) { o.Mounts = []Mount{{Type: "tmpfs", Destination: "/dev/pts"}} }, "destination /dev/pts: the sandbox's own"},
	{"bind under /sys", func(o *Options) {
		o.Mounts = []Mount{{Source: "/sys/fs/cgroup", Destination: "/sys/fs/cgroup"}}
	}, "destination /sys/fs/cgroup is under /sys"},
	{"bind under /proc", func(o *Options) { o.Mounts = []Mount{{Source: "/tmp", Destination: "/proc/sys"}} }, "destination /proc/sys is under /proc"},
	{"bind on /proc/kcore", func(o *Options) {
		o.Mounts = []Mount{{Source: "/etc/hostname", Destination: "/proc/kcore"}}
	}, "destination /proc/kcore is under /proc"},
	{"tmpfs on an lxcfs file", func(o *Options) { o.Mounts = []Mount{{Type: "tmpfs", Destination: "/proc/meminfo"}} }, "is under /proc, where only a bind mount"},
	{"two mounts on one destination", func(o *Options) {
		o.Mounts = []Mount{{Type: "tmpfs", Destination: "/mnt"}, {Source: "/tmp", Destination: "/mnt/"}}
	}, "Mounts[0] and Mounts[1] are both mounted at /mnt"},
	{"relative bind source", func(o *Options) { o.Mounts = []Mount{{Source: "tmp", Destination: "/mnt"}} }, `bind mount source "tmp" is not an absolute path`},
	{"volume name that is a path", func(o *Options) {
		o.Mounts = []Mount{{Type: "volume", Source: "a/b", Destination: "/mnt"}}
	}, `volume name "a/b": want a name`},
	{"unknown mount type", func(o *Options) { o.Mounts = []Mount{{Type: "nfs", Destination: "/mnt"}} }, `unknown type "nfs"`},
	{"unknown bind option", func(o *Options) {
		o.Mounts = []Mount{{Source: "/tmp", Destination: "/mnt", Options: "rw,bogus"}}
	}, `option "rw"`},
	{"negative DiskQuota", func(o *Options) { o.DiskQuota = -1 }, "DiskQuota -1: a negative disk quota"},
	{"DiskQuota below the minimum", func(o *Options) { o.DiskQuota = 1000 }, "DiskQuota 1000: a disk quota below the minimum of 1048576 bytes"},
	{"negative Timeout", func(o *Options) { o.Timeout = -time.Second }, "Timeout -1s is negative"},
	{"unknown rlimit", func(o *Options) { o.Rlimits = []Rlimit{{Resource: 99}} }, "Rlimits[0]: no resource 99"},
	{"rlimit soft above hard", func(o *Options) {
		o.Rlimits = []Rlimit{{Resource: unix.RLIMIT_NOFILE, Soft: 10, Hard: 5}}
	}, "soft limit 10 is above the hard limit 5"},
	{"rlimit twice", func(o *Options) {
		o.Rlimits = []Rlimit{{Resource: unix.RLIMIT_NOFILE, Soft: 5, Hard: 5}, {Resource: unix.RLIMIT_NOFILE, Soft: 6, Hard: 6}}
	}, "Rlimits[1]: resource 7 is limited twice"},
	{"memory of 1 byte", func(o *Options) { o.Resources = &cgroup.Resources{MemoryMax: 1} }, "MemoryMax 1 is too small: a sandbox needs at least 1048576 bytes"},
	{"memory of 100 KiB", func(o *Options) { o.Resources = &cgroup.Resources{MemoryMax: 100 << 10} }, "MemoryMax 102400 is too small"},
	{"memory just below the minimum", func(o *Options) { o.Resources = &cgroup.Resources{MemoryMax: MinMemory - 1} }, "is too small"},
	{"negative memory", func(o *Options) { o.Resources = &cgroup.Resources{MemoryMax: -5} }, "MemoryMax -5 (want bytes, or -1 for no limit)"},
	{"swap without memory", func(o *Options) { o.Resources = &cgroup.Resources{MemorySwapMax: 1 << 30} }, "MemorySwapMax 1073741824 needs a positive MemoryMax"},
	{"one task", func(o *Options) { o.Resources = &cgroup.Resources{PidsMax: 1} }, "PidsMax 1 is too small: a sandbox needs at least 2 tasks"},
	{"negative tasks", func(o *Options) { o.Resources = &cgroup.Resources{PidsMax: -5} }, "PidsMax -5 (want a number of tasks"},
	{"more tasks than the kernel takes", func(o *Options) { o.Resources = &cgroup.Resources{PidsMax: 1 << 23} }, "above the kernel's most, 4194304"},
	{"more CPUs than the host has", func(o *Options) {
		o.Resources = &cgroup.Resources{CPUQuota: time.Duration(runtime.NumCPU()+1) * 100 * time.Millisecond}
	}, fmt.Sprintf("is %d.00 CPUs, and the host has %d", runtime.NumCPU()+1, runtime.NumCPU())},
	{"CPU weight out of range", func(o *Options) { o.Resources = &cgroup.Resources{CPUWeight: 20000} }, "CPUWeight 20000 is not within 1..10000"},
	{"security default memory too small", func(o *Options) {
		o.Security = security.Default()
		o.Security.MemoryMax = 4096
	}, "Security: MemoryMax 4096 is too small"},
	{"security default tasks negative", func(o *Options) {
		o.Security = security.Default()
		o.Security.PidsMax = -1
	}, "Security: PidsMax -1 is negative"},
	{"unknown capability", func(o *Options) {
		o.Security = security.Default()
		o.Security.Capabilities = append(o.Security.Capabilities, "CAP_FLY")
	}, "Security: Capabilities: "},
	{"empty id map", func(o *Options) {
		o.Security = security.Strict()
		o.Security.UserNamespace = &security.UserNamespace{UIDMap: []security.IDMap{{HostID: 100000, Size: 0}}, GIDMap: security.DefaultUserNamespace().GIDMap}
	}, "Security: UserNamespace.UIDMap[0]: size 0"},
	{"overlapping id maps", func(o *Options) {
		m := []security.IDMap{{ContainerID: 0, HostID: 100000, Size: 1000}, {ContainerID: 500, HostID: 300000, Size: 10}}
		o.Security = security.Strict()
		o.Security.UserNamespace = &security.UserNamespace{UIDMap: security.DefaultUserNamespace().UIDMap, GIDMap: m}
	}, "Security: UserNamespace.GIDMap[1] overlaps GIDMap[0]"},
	{"id map past the last id", func(o *Options) {
		m := []security.IDMap{{ContainerID: 0, HostID: 1<<32 - 10, Size: 100}}
		o.Security = security.Strict()
		o.Security.UserNamespace = &security.UserNamespace{UIDMap: m, GIDMap: m}
	}, "UIDMap[0]: the range runs past id 4294967294"},
	{"pool and join", func(o *Options) { o.NetworkPool, o.JoinNetwork = noPool{}, "/proc/1/ns/net" }, "NetworkPool hands the sandbox its network"},
	{"ports without a network", func(o *Options) { o.Ports = []netplug.PortMapping{{ContainerPort: 80}} }, "Ports need a network to publish them on"},
	{"ports on no network", func(o *Options) {
		o.Network, o.Ports = netplug.None(), []netplug.PortMapping{{ContainerPort: 80}}
	}, "Ports need a network"},
	{"ports on the host's network", func(o *Options) {
		o.Network, o.Ports = netplug.Host(), []netplug.PortMapping{{ContainerPort: 80}}
	}, "the sandbox shares the host's network"},
	{"port on a host address that is none", func(o *Options) {
		o.Network, o.Ports = bridgeStub{}, []netplug.PortMapping{{HostIP: "localhost", ContainerPort: 80}}
	}, `Ports[0]: host address "localhost" is not an IP address`},
	{"join and ports", func(o *Options) {
		o.JoinNetwork, o.Ports = "/proc/1/ns/net", []netplug.PortMapping{{ContainerPort: 80}}
	}, "JoinNetwork shares a network namespace"},
	{"relative JoinNetwork", func(o *Options) { o.JoinNetwork = "net" }, `JoinNetwork "net" is not an absolute path`},
	{"port 0", func(o *Options) { o.Network, o.Ports = bridgeStub{}, []netplug.PortMapping{{HostPort: 80}} }, "Ports[0]: no container port"},
	{"unknown protocol", func(o *Options) {
		o.Network, o.Ports = bridgeStub{}, []netplug.PortMapping{{ContainerPort: 80, Protocol: "sctp"}}
	}, `protocol "sctp"`},
	{"alias with a space", func(o *Options) { o.NetworkAliases = []string{"db", "web evil"} }, "NetworkAliases[1]: \"web evil\": a host name has only"},
	{"extra host without address", func(o *Options) { o.ExtraHosts = []netplug.HostEntry{{Names: []string{"x"}}} }, "ExtraHosts[0]: no address"},
	{"extra host without name", func(o *Options) {
		o.ExtraHosts = []netplug.HostEntry{{IP: netip.MustParseAddr("10.0.0.1")}}
	}, "ExtraHosts[0]: no name for 10.0.0.1"},
	{"extra host name with a newline", func(o *Options) {
		o.ExtraHosts = []netplug.HostEntry{{IP: netip.MustParseAddr("10.0.0.1"), Names: []string{"x\n6.6.6.6 bank"}}}
	}, "ExtraHosts[0]: \"x\\n6.6.6.6 bank\": a host name"},
	{"search domain with a space", func(o *Options) { o.DNS = &netplug.DNSConfig{Search: []string{"a b"}} }, `DNS.Search[0]: "a b": want one word`},
	{"resolver option with a newline", func(o *Options) {
		o.DNS = &netplug.DNSConfig{Options: []string{"ndots:1\nnameserver"}}
	}, "DNS.Options[0]"},
	{"nameserver without address", func(o *Options) { o.DNS = &netplug.DNSConfig{Nameservers: []netip.Addr{{}}} }, "DNS.Nameservers[0]: no address"},
	{"relative StateDir", func(o *Options) { o.StateDir = "state" }, `StateDir "state" is not an absolute path`},
}

// Every kind of nonsense is refused by Start before anything is made, with
// an error that is ErrInvalidOptions and ErrSetup and says what is wrong
// on one short line; Validate says the same.
func TestInvalidOptions(t *testing.T) {
	for _, c := range nonsenseOptions {
		t.Run(c.name, func(t *testing.T) {
			o := opts(func(o *Options) { o.Args = []string{"true"} })
			c.set(o)
			checkInvalid(t, o.Validate(), c.want)
			stateDir := o.stateRoot()
			sb := New("alpine:test", o)
			checkInvalid(t, sb.Start(context.Background()), c.want)
			if _, err := os.Stat(filepath.Join(stateDir, sb.ID())); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("the refused sandbox has a state directory (stat: %v)", err)
			}
			if _, err := testEnv.cgroups.Open(sb.ID()); !errors.Is(err, cgroup.ErrNotFound) {
				t.Errorf("the refused sandbox has a cgroup (open: %v)", err)
			}
		})
	}
}

func checkInvalid(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case err == nil:
		t.Fatalf("accepted, want an error saying %q", want)
	case !errors.Is(err, ErrInvalidOptions) || !errors.Is(err, ErrSetup):
		t.Errorf("%v: not ErrInvalidOptions and ErrSetup", err)
	case !strings.Contains(err.Error(), want):
		t.Errorf("%v\nwant it to say %q", err, want)
	case strings.Contains(err.Error(), "\n") || len(err.Error()) > 300:
		t.Errorf("error of %d bytes, or of more than one line: %q", len(err.Error()), err)
	}
}

// Sysctls depend on the security configuration and the network too: a
// key of the host's is refused as invalid options, before anything is made.
func TestInvalidSysctl(t *testing.T) {
	sb := New("alpine:test", opts(func(o *Options) {
		o.Args = []string{"true"}
		o.Sysctls = map[string]string{"vm.swappiness": "0"}
	}))
	err := sb.Start(context.Background())
	checkInvalid(t, err, "vm.swappiness")
	if !errors.Is(err, security.ErrSysctl) {
		t.Errorf("%v: not security.ErrSysctl", err)
	}
}

// Valid values at the edges of what Validate refuses are taken.
func TestValidOptionsAtTheEdges(t *testing.T) {
	for name, set := range map[string]func(*Options){
		"empty value":       func(o *Options) { o.Env = []string{"A=", "B=c=d"} },
		"host name":         func(o *Options) { o.Hostname = "web-1.example_x"; o.NetworkAliases = []string{"db", "db.local"} },
		"64-byte host name": func(o *Options) { o.Hostname = strings.Repeat("h", 64) },
		"lxcfs file":        func(o *Options) { o.Mounts = []Mount{{Source: "/etc/hostname", Destination: "/proc/uptime"}} },
		"under /dev":        func(o *Options) { o.Mounts = []Mount{{Type: "tmpfs", Destination: "/dev/shm"}} },
		"nested mounts": func(o *Options) {
			o.Mounts = []Mount{{Type: "tmpfs", Destination: "/mnt"}, {Type: "tmpfs", Destination: "/mnt/sub"}}
		},
		"/procfoo":       func(o *Options) { o.Mounts = []Mount{{Type: "tmpfs", Destination: "/procfoo"}} },
		"minimum memory": func(o *Options) { o.Resources = &cgroup.Resources{MemoryMax: MinMemory, PidsMax: MinPids} },
		"no limits":      func(o *Options) { o.Resources = &cgroup.Resources{MemoryMax: -1, PidsMax: -1, MemorySwapMax: -1} },
		"the host's CPUs": func(o *Options) {
			o.Resources = &cgroup.Resources{CPUQuota: time.Duration(runtime.NumCPU()) * 100 * time.Millisecond}
		},
		"user and group": func(o *Options) { o.User = "1000:1000"; o.Dir = "/a/./b" },
		"rlimit":         func(o *Options) { o.Rlimits = []Rlimit{{Resource: unix.RLIMIT_NOFILE, Soft: 64, Hard: 64}} },
		"resolver and hosts": func(o *Options) {
			o.DNS = &netplug.DNSConfig{Search: []string{"example.com"}, Options: []string{"ndots:2"}}
		},
		"ports": func(o *Options) {
			o.Network, o.Ports = bridgeStub{}, []netplug.PortMapping{{HostIP: "127.0.0.1", ContainerPort: 80, Protocol: "TCP"}}
		},
		"extra host": func(o *Options) {
			o.ExtraHosts = []netplug.HostEntry{{IP: netip.MustParseAddr("::1"), Names: []string{"me"}}}
		},
		"security defaults":   func(o *Options) { o.Security = security.Strict() },
		"unconfined security": func(o *Options) { o.Security = security.Unconfined() },
	} {
		o := opts(set)
		if err := o.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// The minima are enough to start a sandbox, under each preset; a bind
// mount on a file lxcfs provides works.
func TestMinimumLimitsStart(t *testing.T) {
	for _, preset := range []string{"default", "strict"} {
		sec, _ := security.Preset(preset)
		res, out, errOut := run(t, "alpine:test", opts(func(o *Options) {
			o.Security = sec
			o.Resources = &cgroup.Resources{MemoryMax: MinMemory, PidsMax: MinPids}
			o.Mounts = []Mount{{Source: "/etc/hostname", Destination: "/proc/uptime", ReadOnly: true}}
			o.Args = []string{"cat", "/proc/uptime"}
		}))
		want, _ := os.ReadFile("/etc/hostname")
		if !res.Success() || out != string(want) {
			t.Errorf("%s with %d bytes and %d tasks: %+v, stdout %q, stderr %q", preset, MinMemory, MinPids, res, out, errOut)
		}
	}
}

// A seccomp profile under which no program could start is refused before
// the sandbox starts, naming the call, instead of killing the workload
// with SIGSYS, or faulting it, without a word. A profile that refuses
// only what comes before the filter is loaded is taken.
func TestSeccompThatCannotStart(t *testing.T) {
	unconfined := security.Unconfined() // no no_new_privs: loaded before the privileges go
	for _, c := range []struct {
		name    string
		profile string
		base    *security.Config
		refuses string // "" if the workload must run
	}{
		{"empty allow-list", `{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": []}`, nil, "execve"},
		{"kill by default", `{"defaultAction": "SCMP_ACT_KILL_PROCESS", "syscalls": [{"names": ["write"], "action": "SCMP_ACT_ALLOW"}]}`, nil, "execve"},
		{"no execve", `{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["execve"], "action": "SCMP_ACT_ERRNO"}]}`, nil, "execve"},
		{"no exit_group", `{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["exit_group"], "action": "SCMP_ACT_KILL"}]}`, nil, "exit_group"},
		{"no setresuid after the filter", `{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["setresuid"], "action": "SCMP_ACT_ERRNO"}]}`, unconfined, "setresuid"},
		{"no setresuid before the filter", `{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["setresuid"], "action": "SCMP_ACT_ERRNO"}]}`, nil, ""},
		{"no mount", `{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_ERRNO"}]}`, unconfined, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, err := security.ParseSeccompProfile([]byte(c.profile))
			if err != nil {
				t.Fatal(err)
			}
			sec := security.Default()
			if c.base != nil {
				copy := *c.base
				sec = &copy
			}
			sec.Seccomp = p
			o := opts(func(o *Options) { o.Security, o.Args = sec, []string{"echo", "ran"} })
			var out strings.Builder
			o.Stdout = &out
			res, err := New("alpine:test", o).Run(context.Background())
			if c.refuses == "" {
				if err != nil || !res.Success() || out.String() != "ran\n" {
					t.Fatalf("%+v, %v, stdout %q", res, err, out.String())
				}
				return
			}
			checkInvalid(t, err, "the seccomp profile lets no program start: it refuses "+c.refuses+", which starting the workload needs")
		})
	}
}

// A pool whose profile no workload could start under is refused when it
// is made.
func TestPoolSeccompThatCannotStart(t *testing.T) {
	p, err := security.ParseSeccompProfile([]byte(`{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": []}`))
	if err != nil {
		t.Fatal(err)
	}
	sec := security.Default()
	sec.Seccomp = p
	pool, err := NewPool(context.Background(), "alpine:test", opts(func(o *Options) { o.Security = sec }), 1)
	if err == nil {
		pool.Close()
	}
	checkInvalid(t, err, "it refuses execve")
	if !errors.Is(err, ErrSeccompCannotStart) {
		t.Errorf("%v: not ErrSeccompCannotStart", err)
	}
}

// A pool checks its template, and each of its sandboxes the options it
// may set.
func TestPoolInvalidOptions(t *testing.T) {
	_, err := NewPool(context.Background(), "alpine:test", opts(func(o *Options) {
		o.Resources = &cgroup.Resources{MemoryMax: 1}
	}), 1)
	checkInvalid(t, err, "MemoryMax 1 is too small")
	pool := newPool(t, opts(nil), 1)
	defer pool.Close()
	for _, o := range []*Options{
		{Args: []string{"true"}, Env: []string{"=x"}},
		{Args: []string{"true"}, Timeout: -time.Second},
		{Args: []string{"true"}, Rlimits: []Rlimit{{Resource: 99}}},
	} {
		err := pool.New(o).Start(context.Background())
		if !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("%+v: %v, want ErrInvalidOptions", o, err)
		}
	}
	res, err := pool.New(&Options{Args: []string{"true"}}).Run(context.Background())
	if err != nil || !res.Success() {
		t.Errorf("the pool after refusals: %+v %v", res, err)
	}
}

// Exec checks its options as Start does.
func TestExecInvalidOptions(t *testing.T) {
	sb := New("alpine:test", opts(func(o *Options) { o.Args = []string{"sleep", "60"} }))
	if err := sb.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	for _, c := range []struct {
		o    *ExecOptions
		want string
	}{
		{&ExecOptions{}, "Args: no command"},
		{&ExecOptions{Args: []string{"env"}, Env: []string{"=x"}}, "has an empty name"},
		{&ExecOptions{Args: []string{"pwd"}, Dir: "rel"}, "not an absolute path"},
	} {
		_, err := sb.Exec(context.Background(), c.o)
		checkInvalid(t, err, c.want)
	}
}

// An init killed for lack of memory before its workload started says so,
// rather than that it exited. The limit here is its parent cgroup's, which
// Validate cannot see: the cgroup v1 memory controller's, where there is
// one.
func TestInitOOMIsReported(t *testing.T) {
	const v1Memory = "/sys/fs/cgroup/memory"
	if _, err := os.Stat(filepath.Join(v1Memory, "memory.limit_in_bytes")); err != nil {
		t.Skip("no cgroup v1 memory controller to limit a parent cgroup with")
	}
	parent := fmt.Sprintf("berth-oomtest-%d", os.Getpid())
	dir := filepath.Join(v1Memory, parent)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cgm, err := cgroup.NewManager(cgroup.Options{Parent: parent})
	if err != nil {
		os.Remove(dir)
		t.Fatal(err)
	}
	defer func() {
		if err := cgm.RemoveParent(); err != nil {
			t.Errorf("remove the parent cgroup: %v", err)
		}
		// berth removes only what it made: the parent's directories in
		// the other hierarchies, not the memory one this test made.
		if _, err := os.Stat(dir); err != nil {
			t.Errorf("%s, which the test made, was removed by berth (stat: %v)", dir, err)
		}
		if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("remove %s: %v", dir, err)
		}
		for _, h := range []string{"pids", "cpu", "devices"} {
			if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", h, parent)); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("%s parent %s left behind (stat: %v)", h, parent, err)
			}
		}
	}()
	// Far less than an init needs (MinMemory), and more than the kernel
	// takes as a limit.
	if err := os.WriteFile(filepath.Join(dir, "memory.limit_in_bytes"), []byte("160k"), 0); err != nil {
		t.Fatal(err)
	}
	sb := New("alpine:test", opts(func(o *Options) { o.Cgroups, o.Args = cgm, []string{"true"} }))
	err = sb.Start(context.Background())
	if err == nil {
		sb.Wait()
		t.Fatal("started under a parent limit of 160 KiB")
	}
	if !errors.Is(err, ErrInitOOM) || !errors.Is(err, ErrSetup) || !strings.Contains(err.Error(), "killed for lack of memory") {
		t.Errorf("%v: want ErrInitOOM, an ErrSetup", err)
	}
	if _, err := cgm.Open(sb.ID()); !errors.Is(err, cgroup.ErrNotFound) {
		t.Errorf("the sandbox's cgroup is left (open: %v)", err)
	}
}

// linksImage is alpine with symbolic links that lead mount destinations
// elsewhere: /data to /proc, /cg to /sys/fs/cgroup, /self through ../ to
// /proc/self, and /ok to /tmp.
var linksImage = sync.OnceValue(func() error {
	links := testenv.Symlinks(map[string]string{"data": "/proc", "cg": "sys/fs/cgroup", "self": "../../../proc/self", "ok": "/tmp"})
	return testenv.ImportAlpineWith(context.Background(), testEnv.store, "alpine-mountlinks:test", links...)
})

// A destination that the image's links lead under /proc or /sys is refused
// as the same destination named directly would be; one they lead somewhere
// ordinary is mounted there.
func TestMountThroughImageLinks(t *testing.T) {
	if err := linksImage(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		dst, want string
	}{
		{"/data", "destination /data leads, through the image's symbolic links, to /proc: the sandbox's own /proc"},
		{"/data/sys/kernel", "to /proc/sys/kernel is under /proc"},
		{"/cg/memory", "to /sys/fs/cgroup/memory is under /sys"},
		{"/self", "to /proc/self is under /proc"},
	} {
		sb := New("alpine-mountlinks:test", opts(func(o *Options) {
			o.Args = []string{"true"}
			o.Mounts = []Mount{{Source: t.TempDir(), Destination: c.dst}}
		}))
		checkInvalid(t, sb.Start(context.Background()), c.want)
	}
	if left := leftBehind(t); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("through /ok\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	res, out, errOut := run(t, "alpine-mountlinks:test", opts(func(o *Options) {
		o.Args = []string{"cat", "/tmp/sub/f"}
		o.Mounts = []Mount{{Source: dir, Destination: "/ok/sub"}}
	}))
	if !res.Success() || out != "through /ok\n" {
		t.Errorf("mount through /ok: %+v, stdout %q, stderr %q", res, out, errOut)
	}
}

// BenchmarkValidate is what Start adds to check options like the berth
// command's.
func BenchmarkValidate(b *testing.B) {
	o := &Options{
		Args: []string{"/bin/sh", "-c", "echo hello"}, Env: []string{"A=1", "B=2", "PATH=/bin:/usr/bin", "HOME=/root", "TERM=xterm"},
		Dir: "/work", User: "1000:1000", Hostname: "build-42",
		Mounts:    []Mount{{Source: "/srv/data", Destination: "/data", ReadOnly: true}, {Type: "tmpfs", Destination: "/scratch", Options: "size=64m"}},
		Resources: &cgroup.Resources{MemoryMax: 512 << 20, PidsMax: 256, CPUQuota: 50 * time.Millisecond, CPUPeriod: 100 * time.Millisecond},
		Rlimits:   []Rlimit{{Resource: unix.RLIMIT_NOFILE, Soft: 1024, Hard: 1024}},
		Timeout:   time.Minute, StateDir: "/run/berth",
	}
	for b.Loop() {
		if err := o.Validate(); err != nil {
			b.Fatal(err)
		}
	}
}
