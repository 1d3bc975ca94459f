package sandbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/internal/safetree"
	"github.com/berth-dev/berth/layerfs"
	"github.com/berth-dev/berth/netplug"
	"github.com/berth-dev/berth/sandbox/internal/nsinit"
	"github.com/berth-dev/berth/security"
)

// Errors a Sandbox's methods return; test for them with errors.Is.
var (
	ErrNotStarted     = errors.New("sandbox not started")
	ErrAlreadyStarted = errors.New("sandbox already started")
	ErrNotRunning     = errors.New("sandbox not running")
	// ErrNotOwner means the sandbox was started by another process, which
	// alone can wait for it.
	ErrNotOwner = errors.New("sandbox started by another process")
	// ErrNotFound means no sandbox has the given ID.
	ErrNotFound = errors.New("no such sandbox")
	// ErrAmbiguousID means an ID prefix names more than one sandbox.
	ErrAmbiguousID = errors.New("sandbox ID prefix is ambiguous")
	// ErrNameInUse means another sandbox of the state directory has
	// the name Options.Name asks for.
	ErrNameInUse = errors.New("sandbox name already in use")
	// ErrSetup wraps a failure to build the sandbox before its workload
	// started, or to start a process Exec was asked for: nothing of the
	// workload, or of the process, ran. Start and Exec wrap every such
	// failure with it.
	ErrSetup = errors.New("sandbox setup failed")
	// ErrExec means the sandbox was built but its program could not be
	// run; the wrapped errno says why (ENOENT: no such program).
	ErrExec = errors.New("cannot run the program")
	// ErrUnsafeEntry means a copy refused an entry: a tar member whose
	// name or hard link leaves its destination, or one below a symbolic
	// link, a device node, or a file of a kernel filesystem.
	ErrUnsafeEntry = safetree.ErrUnsafeEntry
	// ErrTooDeep means a copy met a tree nested deeper than it descends.
	ErrTooDeep = safetree.ErrTooDeep
	// ErrCopyChanged means the path a copy was asked for was removed, or
	// swapped for an entry of another kind, while the copy opened it: the
	// workload changed it meanwhile. Trying again sees what it is now.
	ErrCopyChanged = safetree.ErrChanged
)

// DefaultStateDir holds the runtime state of running sandboxes. It is on
// tmpfs, like the mounts and cgroups it describes, so a reboot clears both.
const DefaultStateDir = "/run/berth"

// Storage prepares and releases root filesystems. *layerfs.Store is the
// built-in one; out-of-process storage plugins implement the same methods.
type Storage interface {
	Image(ctx context.Context, ref string) (*layerfs.Image, error)
	Prepare(ctx context.Context, key string, img *layerfs.Image, opts *layerfs.PrepareOptions) (*layerfs.Rootfs, error)
	Release(ctx context.Context, key string) error
}

// Network attaches sandboxes' network namespaces. netplug's networks are
// the built-in ones; out-of-process network plugins implement the same
// methods.
type Network interface {
	Attach(ctx context.Context, id, netnsPath string, opts *netplug.AttachOptions) (*netplug.Attachment, error)
	Detach(ctx context.Context, id, netnsPath string) error
}

// A NamespacePool hands out network namespaces attached ahead of time;
// release detaches and discards one once its sandbox is gone.
type NamespacePool interface {
	Acquire(ctx context.Context, id string) (netnsPath string, a *netplug.Attachment, release func(), err error)
}

// Options configure a sandbox. The zero value runs the image's default
// command with the Default security settings and no network.
type Options struct {
	// Args replaces the image's Cmd, as `docker run IMAGE ARGS...` does;
	// the image's Entrypoint, or Entrypoint below, still runs first, with
	// Args as its arguments. Empty means the image's Cmd. To run a
	// command of one's own whatever the image's entrypoint, as a build's
	// RUN step does, clear it: Entrypoint: []string{}.
	Args []string
	// Entrypoint, if not nil, replaces the image's Entrypoint, as `docker
	// run --entrypoint` does, and the command is Entrypoint followed by
	// Args: the image's Cmd, meant as arguments to its own entrypoint,
	// is dropped. An empty non-nil slice clears the image's Entrypoint,
	// so that Args alone is the command, or the image's Cmd if Args is
	// empty (Docker's --entrypoint ""). In short:
	//
	//	Entrypoint      Args   command
	//	nil             empty  image's Entrypoint + image's Cmd
	//	nil             set    image's Entrypoint + Args
	//	[]string{}      empty  image's Cmd
	//	[]string{}      set    Args
	//	[]string{e...}  any    e... + Args
	Entrypoint []string
	// Name is the sandbox's name, unique among the live sandboxes of its
	// state directory: Open accepts it wherever it accepts an ID, and
	// Start fails with ErrNameInUse if it is taken. Names are 1–128 of
	// [a-zA-Z0-9_.-], starting with a letter or digit, as Docker's are.
	Name string
	// Labels are the caller's key=value metadata, kept in the sandbox's
	// record (State.Labels) for listing and filtering; berth gives them
	// no meaning.
	Labels map[string]string
	// Env is added to the image's environment, replacing variables of the
	// same name. Entries are KEY=VALUE.
	Env []string
	// Dir is the working directory; empty means the image's, or "/".
	Dir string
	// User is "uid[:gid]" or "name[:group]", resolved in the image's
	// /etc/passwd and /etc/group; empty means the image's user, or root.
	User string
	// Hostname defaults to the first 12 characters of the sandbox's ID.
	Hostname string

	// Stdin, Stdout and Stderr are the workload's standard streams: nil
	// means /dev/null, anything else, *os.File included, is copied
	// through a pipe, so that the workload can read its input and add to
	// its output but never reach the host's files behind them. Output is
	// complete when Wait returns. Files are copied through duplicates, so
	// that, as with os/exec, the caller may close its own once Start has
	// returned. A Stdin that is an *os.File stops being read when the
	// workload ends; another reader is read until its next Read returns,
	// whose data is then dropped. Stdout and Stderr that are one open
	// file share one pipe, so their order is kept.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// HandOverStdio passes an *os.File given as Stdin, Stdout or Stderr
	// to the workload as it is, as os/exec does, instead of through a
	// pipe. The workload then holds the host's open file itself: it can
	// reopen it through /proc/self/fd with any access the file's
	// permissions give it, read what was written to it before, seek,
	// truncate, lock or map it, and use its ioctls (on a terminal,
	// TIOCSTI types into the host's shell). Hand over only files meant to
	// be the workload's, such as a pipe's end or a file it may overwrite.
	HandOverStdio bool
	// TTY gives the workload a terminal as its standard streams; what it
	// writes, stderr included, goes to Stdout, and Stdin feeds its input.
	TTY bool
	// ExtraFiles are passed to the workload as descriptors 3, 4, ...
	ExtraFiles []*os.File

	// Mounts are added to the rootfs, in order. Bind mounts and volumes
	// are nosuid and nodev unless a Mount opts out; their sources may not
	// go through symbolic links (see Mount).
	Mounts []Mount
	// ReadonlyRootfs makes / read-only; mounts stay as they are.
	ReadonlyRootfs bool
	// DiskQuota, if not 0, caps in bytes what the workload may write to
	// its rootfs, and its files at one per 4 KiB: past it, writes fail
	// with ENOSPC or EDQUOT while the host's disk keeps the rest. It needs
	// at least layerfs.MinDiskQuota; see layerfs.PrepareOptions for how it
	// is enforced. Mounts and volumes are not counted.
	DiskQuota int64
	// Rlimits are set for the workload.
	Rlimits []Rlimit
	// Resources are the cgroup limits. Where they set no memory or pids
	// limit (or are nil), the security configuration's MemoryMax and
	// PidsMax apply: under Default, 3/4 of the host's RAM and 4096 tasks.
	Resources *cgroup.Resources
	// Security says what the workload may do; nil means security.Default().
	Security *security.Config
	// Sysctls are kernel parameters written inside the sandbox before its
	// workload starts, as Docker's --sysctl, winning over Security's key
	// by key. Only keys of the sandbox's own namespaces are allowed
	// (security.SysctlNamespace): no net.* key when it shares the host's
	// network or joins another's, no user.* key without a user namespace.
	Sysctls map[string]string
	// Devices are host devices to give the sandbox, as `docker run
	// --device` does. Whatever the security configuration, a sandbox's
	// cgroup lets it use only the nodes of its own /dev (null, zero, full,
	// random, urandom, tty, ptmx and its terminals), these, and any
	// devices Resources.Devices allows.
	Devices []Device
	// Timeout, if positive, sets one deadline, that long after Start is
	// called, for the start and the workload together: a start not
	// finished by then is given up, and Start's error wraps
	// context.DeadlineExceeded; a workload still running then is ended
	// (see Grace), and the Result says TimedOut. The time the start took
	// counts: a sandbox never lives longer than Timeout plus Grace.
	Timeout time.Duration
	// Grace is how long a workload that Timeout or the end of Start's
	// context ends is given to end on its own: it gets SIGTERM (through
	// its PID 1, which passes it on), and SIGKILL goes to every process
	// of the sandbox only if it is still running Grace later. 0 means
	// SIGKILL at once. A workload that handles SIGTERM can so flush and
	// clean up; the Result still says TimedOut or Canceled, whatever
	// status it exits with. os/exec's Cmd.Cancel and WaitDelay are the
	// model. A start that has not finished is given up at once, whatever
	// Grace says: no workload runs yet. Stop takes a grace of its own.
	Grace time.Duration
	// WaitFor makes Start wait until the workload's service is ready:
	// until every check passes (see ReadyCheck). A check that fails, or
	// ReadyTimeout running out first, fails Start, which then ends the
	// workload as Stop does with Grace, and waits for its teardown.
	WaitFor []ReadyCheck
	// ReadyTimeout bounds WaitFor's wait; 0 means DefaultReadyTimeout.
	ReadyTimeout time.Duration
	// LogBytes, if positive, keeps about the last LogBytes bytes of the
	// workload's output in memory, readable with Logs while it runs and
	// after it has ended.
	LogBytes int
	// Detachable starts the sandbox so that Supervise can hand it to a
	// supervisor process that outlives this one: its PID 1 gets no
	// parent-death signal, and its output stays in pipes that Supervise
	// passes on (Stdout and Stderr must be nil). See Supervise.
	Detachable bool

	// Network connects the sandbox: nil means a network namespace of its
	// own with only loopback; netplug.Host() shares the host's; a bridge
	// or named network from netplug gives it an address and a route.
	Network Network
	// Ports are published on the host (bridge networks).
	Ports []netplug.PortMapping
	// DNS, if set, replaces the network's resolver settings.
	DNS *netplug.DNSConfig
	// NetworkAliases are more names other sandboxes on the same named
	// network may use for this one, besides its hostname.
	NetworkAliases []string
	// ExtraHosts are added to the sandbox's /etc/hosts.
	ExtraHosts []netplug.HostEntry
	// NetworkPool, if set, hands the sandbox a network namespace attached
	// ahead of time (netplug.Pool), which it joins instead of attaching
	// its own; Network, Ports and JoinNetwork must then be unset.
	NetworkPool NamespacePool
	// JoinNetwork, if set, is a network namespace to share instead of one
	// of the sandbox's own, e.g. another sandbox's (its
	// NetworkNamespace), as a pod's sidecars share one. Network and Ports
	// must then be unset.
	JoinNetwork string
	// Networks is where Recover finds the network attachments of dead
	// sandboxes; nil means netplug's default directories, if they exist.
	Networks *netplug.Networks
	// Backends reopens, for Recover, the plugins (Locatable Storage and
	// Network) that dead sandboxes recorded; without it, Recover keeps
	// such sandboxes and reports them in RecoverResult.Failed.
	Backends Backends

	// Storage resolves the image and prepares the rootfs; nil opens the
	// store at layerfs.DefaultRoot().
	Storage Storage
	// Cgroups is where sandbox cgroups go; nil detects the host's layout
	// and uses the "berth" parent.
	Cgroups *cgroup.Manager
	// StateDir holds per-sandbox runtime files; empty means DefaultStateDir.
	StateDir string
	// KeepRootfs keeps the sandbox's writable layer after its workload
	// has ended, until Close, so that Commit and CopyFrom can still read
	// it. Off by default: an exited sandbox then holds nothing. The
	// cgroup, network and PID 1 still go when the workload ends; the
	// rootfs, with the sandbox's state directory and its claim on it,
	// stays, so that Recover leaves it alone while this process lives
	// and reclaims it once it has died. A Pool's sandboxes cannot keep
	// theirs.
	KeepRootfs bool
	// Logger receives diagnostics; nil discards them.
	Logger *slog.Logger
}

func (o *Options) logger() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// A Mount is a filesystem to add to the sandbox.
//
// A bind mount's source is opened on the host without following symbolic
// links: a path through one is refused with ErrMountSourceLink, whose
// message names the link and the path to pass instead if it is trusted. A
// sandbox that can write to a host directory can leave links there, and
// from the host they look like any other. What is checked is what is
// mounted: the init gets the opened source, not its path. The same holds
// for a named volume's own directory (the directory holding the volumes is
// the storage's, trusted as configured).
//
// Bind mounts and volumes are nosuid and nodev, on the source's submounts
// too: a setuid binary or a device node that a sandbox, or anyone, left in
// a host directory grants nothing inside. Options "suid" and "dev" opt
// out; flags the source's own mounts have (nosuid, read-only, ...) stay.
// ReadOnly also covers the submounts.
type Mount struct {
	Type        string // "bind" (the default), "volume" or "tmpfs"
	Source      string // absolute host path for bind mounts; the volume's name
	Destination string // absolute path inside the sandbox; not /proc, /sys or /dev (see Options.Validate)
	ReadOnly    bool
	// Options are, for tmpfs, its mount data ("size=64m,mode=1777"). For
	// bind mounts and volumes, a comma-separated list: "suid" and "dev"
	// give up nosuid and nodev, "noexec" forbids running files; "nosuid",
	// "nodev" and "exec" state the defaults.
	Options string
}

// An Rlimit is a resource limit for the workload, as setrlimit(2) takes.
type Rlimit struct {
	Resource   int // unix.RLIMIT_*
	Soft, Hard uint64
}

// Result says how a sandbox's workload ended.
type Result struct {
	ExitCode   int            // the exit status, or 128+signal
	Signal     syscall.Signal // the signal that ended it, if one did
	OOMKilled  bool           // the kernel's OOM killer killed a process in it
	TimedOut   bool           // Options.Timeout ran out
	Canceled   bool           // the context given to Start was cancelled
	PeakMemory uint64         // bytes, as the cgroup recorded
	CPUTime    time.Duration  // user + system, all processes
	Started    time.Time
	Exited     time.Time
}

// Success reports whether the workload exited with status 0.
func (r *Result) Success() bool { return r.ExitCode == 0 && r.Signal == 0 }

// A Sandbox is one container. Create it with New, start it with Start or
// Run, and Close it when done.
type Sandbox struct {
	ref  string
	img  *layerfs.Image
	opts Options
	log  *slog.Logger
	id   string

	state      State
	rootfs     string              // host path of the rootfs, once started
	attachment *netplug.Attachment // its network, once attached
	netns      *os.File            // Options.JoinNetwork, open while starting
	// mountSources are the bind mounts' sources, as detached mount
	// trees, open while starting (userMounts).
	mountSources []*os.File
	devices      []hostDevice // Options.Devices, checked

	mu        sync.Mutex
	started   bool
	closed    bool
	cmd       *exec.Cmd   // PID 1, if this process started the sandbox
	proc      *os.Process // PID 1, started here or found by Open
	status    *nsinit.StatusReader
	ptyMaster *os.File
	ttyDone   chan struct{} // closed when terminal output has been copied
	streams   hostStreams   // the host's side of the workload's piped stdio
	cg        *cgroup.Cgroup
	storage   Storage
	undo      []func() error // cleanup, newest last
	hold      *rootfsHold    // the rootfs, against release while read; what KeepRootfs keeps
	done      chan struct{}  // closed when the workload has ended and been reaped
	result    *Result
	waitErr   error
	killed    struct{ timeout, cancel bool }
	deadline  time.Time // when Options.Timeout runs out, fixed by Start; zero for none

	pool    *Pool // the pool the sandbox comes from, if any
	poolErr error // options the pool does not allow
	plan    *security.LSMPlan
	standby *launched      // a pool's sandbox: PID 1, waiting for its workload
	copying sync.WaitGroup // copying a pooled workload's output
	output  *outputLog     // the output kept for Logs and log checks, if any

	// lateMounts are the mounts a pool's sandbox adds to the pool's (see
	// Pool.New), which its PID 1 makes once it is taken.
	lateMounts []Mount
	// forPool marks a sandbox a pool builds ahead of its request.
	forPool bool

	// Reset's (reset.go).
	resetMu        sync.Mutex      // one Reset at a time
	resetting      chan struct{}   // closed by supervise when the replaced workload is gone
	runCtx         context.Context // Start's, which the workloads Reset starts go on obeying
	outputs        stdio           // the workload's stdout and stderr, for the next one
	usageBase      cgroup.Stats    // the cgroup's use before the current workload
	rootfsReleased bool            // Reset released the rootfs and has no new one
	resets         int             // how many times Reset started the workload again
	recorded       chan struct{}   // closed when the latest workload's record is written

	owner    *os.File // the owner lock on the state directory (ownerlock.go)
	detached detached // Options.Detachable's (supervise.go)
}

// New returns a sandbox for the image ref names, not yet started. As with
// exec.Command, problems are reported by Start.
func New(ref string, opts *Options) *Sandbox {
	s := &Sandbox{ref: ref, done: make(chan struct{})}
	if opts != nil {
		s.opts = *opts
	}
	s.log = s.opts.Logger
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	var b [8]byte
	rand.Read(b[:])
	s.id = hex.EncodeToString(b[:])
	return s
}

// NewFromImage returns a sandbox for an image value already resolved in
// storage (nil storage means opts.Storage, or the default store).
func NewFromImage(img *layerfs.Image, opts *Options) *Sandbox {
	s := New(img.Digest.String(), opts)
	s.img = img
	return s
}

// ID returns the sandbox's unique ID.
func (s *Sandbox) ID() string { return s.id }

// Run starts the sandbox, waits for its workload to end and frees
// everything it used. Its Result and error are Wait's: a Result is never
// hidden behind an error. So:
//
//   - the sandbox could not start: nil Result, and Start's error;
//   - its readiness wait (Options.WaitFor) failed: the Result of the
//     workload it killed, and Start's error, which wraps ErrNotReady;
//   - the workload ran: a Result saying how it ended, whatever its
//     status (a status other than 0 is no error), and a nil error, or
//     the error of the teardown after it, which does not change how the
//     workload ended.
//
// Output and CombinedOutput are Run for callers who want the output, and
// an error when the workload fails.
func (s *Sandbox) Run(ctx context.Context) (*Result, error) {
	if err := s.Start(ctx); err != nil {
		return s.resultOfFailedStart(err)
	}
	return s.Wait()
}

// start is Start but for the readiness wait (readywait.go).
func (s *Sandbox) start(ctx context.Context) (err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return ErrAlreadyStarted
	}
	if s.closed {
		return fmt.Errorf("sandbox %s: closed", s.id)
	}
	s.started = true
	defer func() {
		if err != nil {
			s.streams.release()
			s.cleanup()
			close(s.done)
			if s.id == "" {
				// A pooled sandbox gets its ID when it takes one of
				// the pool's; a start that fails before has none.
				err = fmt.Errorf("sandbox: %w", setupError(err))
			} else {
				err = fmt.Errorf("sandbox %s: %w", s.id, setupError(err))
			}
		}
	}()
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.validate(); err != nil {
		return err
	}
	// The steps of the start end with ctx, and with the timeout's
	// deadline, fixed here: the same deadline then ends the workload
	// (supervise), so that the start and the run share one Timeout.
	startCtx := ctx
	if s.opts.Timeout > 0 {
		s.deadline = time.Now().Add(s.opts.Timeout)
		var cancel context.CancelFunc
		startCtx, cancel = context.WithDeadlineCause(ctx, s.deadline,
			fmt.Errorf("not started within its timeout of %s: %w", s.opts.Timeout, context.DeadlineExceeded))
		defer cancel()
	}

	if s.pool != nil {
		return s.startFromPool(ctx, startCtx)
	}
	sec := s.security(&s.opts)
	rootfs, err := s.build(startCtx, sec)
	if err != nil {
		return err
	}
	spec, err := s.buildSpec(rootfs, s.stateDir(), sec)
	if err != nil {
		return err
	}
	s.state.Hostname = spec.Hostname
	p, console, err := s.launchInit(nsinit.ModeInit, sec)
	if err != nil {
		return err
	}
	if console != nil {
		defer console.Close()
	}
	// PID 1 waits for its spec, so the workload's first instruction
	// already sees its network.
	if err := s.attachNetwork(startCtx, p.cmd.Process.Pid, s.stateDir(), spec.Hostname); err != nil {
		p.abandon()
		return err
	}
	if err := p.run(startCtx, spec); err != nil {
		return s.startFailure(err)
	}
	return s.finishStart(ctx, p, console, rootfs)
}

// finishStart finishes a start whose workload runs: the terminal, the
// supervisor and the record.
func (s *Sandbox) finishStart(ctx context.Context, p *launched, console *os.File, rootfs string) error {
	if console != nil {
		if err := s.attachTerminal(console); err != nil {
			p.abandon()
			return err
		}
	}
	s.cmd, s.status, s.proc = p.cmd, p.status, p.cmd.Process
	s.result = &Result{Started: p.started}
	s.runCtx = ctx
	s.rootfs = rootfs
	s.state.Rootfs = rootfs
	s.state.Pending = false
	// The record is completed beside the workload, after Start has
	// returned: until then it says Pending, which Open waits out. The
	// teardown waits for it.
	record, recorded := s.state, make(chan struct{})
	prev := s.recorded
	s.recorded = recorded
	go func() {
		defer close(recorded)
		if prev != nil {
			// A Reset's record must not be overwritten by the one
			// of the workload it replaced, still being written.
			<-prev
		}
		if record.Init.PID == 0 {
			if st, err := procStartTime(p.cmd.Process.Pid); err == nil {
				record.Init = procID{PID: p.cmd.Process.Pid, StartTime: st}
			}
		}
		if err := writeState(s.stateDir(), &record); err != nil {
			s.log.Warn("update sandbox state", "id", s.id, "err", err)
		}
	}()
	if prev == nil {
		// Once, not once per Reset: the last record waits for those
		// before it.
		s.undo = append(s.undo, func() error { <-s.recorded; return nil })
	}
	p.recorded = recorded
	if s.opts.Detachable {
		// Its PID 1 and status pipe wait for Supervise, or for Wait.
		s.detached.hold(func() { go s.supervise(ctx, p) }, p, s.ptyMaster)
		return nil
	}
	go s.supervise(ctx, p)
	return nil
}

// build makes what the sandbox's init needs before it starts: the record,
// the cgroup, the network namespace to join, the rootfs. It returns the
// rootfs's host path; s.undo undoes it all.
func (s *Sandbox) build(ctx context.Context, sec *security.Config) (rootfs string, err error) {
	// Bad devices are the caller's mistake: reported before anything is
	// made.
	if s.devices, err = resolveDevices(s.opts.Devices); err != nil {
		return "", err
	}
	s.storage = s.opts.Storage
	if s.storage == nil {
		if s.storage, err = defaultStore(); err != nil {
			return "", err
		}
	}
	if s.img == nil {
		if s.img, err = s.storage.Image(ctx, s.ref); err != nil {
			return "", err
		}
	}
	// What the image's entrypoint leaves to run is known now; a pool's
	// sandbox runs its request's command, checked once it is taken.
	var argv []string
	if !s.forPool {
		if argv, err = command(&s.opts, s.img.Config.Config.Entrypoint, s.img.Config.Config.Cmd); err != nil {
			return "", err
		}
	}
	cgm := s.opts.Cgroups
	if cgm == nil {
		if cgm, err = defaultCgroups(); err != nil {
			return "", err
		}
	}

	// The record comes before anything it describes, so that a crash at
	// any later point leaves Recover enough to undo it.
	// The files the init binds (hosts, resolv.conf) must be reachable by
	// root of a user namespace, an ordinary id on the host.
	// Its owner lock tells Recover that it lives, record or not
	// (ownerlock.go), until after the directory is gone.
	stateDir := s.stateDir()
	owner, err := claimStateDir(s.stateRoot(), stateDir)
	if err != nil {
		return "", err
	}
	s.owner = owner
	s.hold = &rootfsHold{}
	s.undo = append(s.undo, s.hold.untilClose(owner.Close))
	if err := os.Chmod(s.stateRoot(), 0o711); err != nil {
		return "", err
	}
	s.undo = append(s.undo, s.hold.untilClose(func() error { return removeStateDir(stateDir) }))
	if err := s.claimName(); err != nil {
		return "", err
	}
	s.state = State{
		ID: s.id, Image: s.ref, Args: s.opts.Args, Command: argv, Created: time.Now().UTC(), Host: self(),
		RootfsKey: "sandbox-" + s.id, Cgroup: s.id, Parent: cgm.Parent(), Volumes: volumeNames(s.opts.Mounts),
		ImageDigest: s.img.Digest.String(), Env: s.opts.Env, User: s.opts.User, Dir: s.opts.Dir,
		Name: s.opts.Name, Labels: s.opts.Labels, Pending: true,
	}
	s.state.Mounts, s.state.Resources = s.opts.Mounts, s.opts.Resources
	if st, ok := s.storage.(*layerfs.Store); ok {
		s.state.Store = st.Root()
	}
	if err := writeState(stateDir, &s.state); err != nil {
		return "", err
	}
	if err := recordBackends(stateDir, s.storage, s.opts.Network); err != nil {
		return "", err
	}
	// Only Exec from other processes needs it, once the record is
	// complete, and it is the largest part of it (the seccomp profile):
	// not written until then.
	s.state.Security = sec

	s.cg, err = s.createCgroup(cgm, sec)
	if err != nil {
		return "", err
	}
	s.undo = append(s.undo, func() error { return s.cg.Remove(context.Background()) })

	// The rootfs is made before PID 1 starts, so that its mount is there
	// to copy when PID 1's mount namespace is made.
	join := s.opts.JoinNetwork
	if p := s.opts.NetworkPool; p != nil {
		if join != "" {
			return "", errors.New("NetworkPool excludes JoinNetwork")
		}
		path, a, release, err := p.Acquire(ctx, s.id)
		if err != nil {
			return "", fmt.Errorf("network: %w", err)
		}
		s.undo = append(s.undo, func() error { release(); return nil })
		join, s.attachment = path, a
	}
	if join != "" {
		if s.opts.Network != nil || len(s.opts.Ports) > 0 {
			return "", errors.New("a joined network namespace excludes Network and Ports: it has its network already")
		}
		if s.netns, err = os.Open(join); err != nil {
			return "", fmt.Errorf("network namespace to join: %w", err)
		}
		// Needed only until the init has it (launchInit closes it then);
		// closed here if the start fails first.
		s.undo = append(s.undo, func() error { s.closeNetns(); return nil })
	}
	prep, err := prepareOptions(sec)
	if err != nil {
		return "", err
	}
	if s.opts.DiskQuota != 0 {
		if prep == nil {
			prep = &layerfs.PrepareOptions{}
		}
		prep.DiskQuota = s.opts.DiskQuota
	}
	fs, err := s.storage.Prepare(ctx, s.state.RootfsKey, s.img, prep)
	if prep != nil && prep.UserNS != nil {
		prep.UserNS.Close()
	}
	if err != nil {
		return "", err
	}
	s.undo = append(s.undo, s.hold.untilClose(s.hold.releasing(func() error {
		if s.rootfsReleased {
			return nil // by a Reset that failed to prepare the next
		}
		return s.storage.Release(context.Background(), s.state.RootfsKey)
	})))
	return fs.Path, nil
}

func (s *Sandbox) closeNetns() {
	if s.netns != nil {
		s.netns.Close()
		s.netns = nil
	}
}

func (s *Sandbox) stateDir() string { return filepath.Join(s.stateRoot(), s.id) }

// resources are the cgroup limits: asked's, with the security
// configuration's defaults where asked sets none.
func resources(asked *cgroup.Resources, sec *security.Config) *cgroup.Resources {
	if sec.MemoryMax == 0 && sec.PidsMax == 0 {
		return asked
	}
	r := cgroup.Resources{}
	if asked != nil {
		r = *asked
	}
	if r.MemoryMax == 0 {
		r.MemoryMax = sec.MemoryMax
	}
	if r.PidsMax == 0 {
		r.PidsMax = sec.PidsMax
	}
	return &r
}

func (s *Sandbox) stateRoot() string { return s.opts.stateRoot() }

func (o *Options) stateRoot() string {
	if o.StateDir != "" {
		return o.StateDir
	}
	return DefaultStateDir
}

// launchInit starts the sandbox's PID 1, which waits for its spec. With a
// terminal, it also returns the socket the init will send the terminal on.
// In standby mode the workload's stdio, files and terminal come later,
// with its part of the spec.
func (s *Sandbox) launchInit(mode string, sec *security.Config) (*launched, *os.File, error) {
	// fd 5 is the console socket or nothing; the workload's own extra
	// files follow from fd 6.
	extra := []*os.File{nil}
	var console *os.File
	standby := mode == nsinit.ModeStandby
	var std stdio
	var streams hostStreams
	switch {
	case !standby && !s.opts.TTY && s.resets > 0:
		std, streams = s.nextStdio()
	case !standby && !s.opts.TTY && s.opts.Detachable:
		var err error
		if std, err = s.detachedStdio(); err != nil {
			return nil, nil, err
		}
	case !standby && !s.opts.TTY:
		var err error
		if std, streams, err = pipedStdio(s.opts.Stdin, s.opts.Stdout, s.opts.Stderr, s.opts.HandOverStdio); err != nil {
			return nil, nil, err
		}
		std.out, std.err = s.teeOutputs(std.out, std.err)
		s.outputs = stdio{out: std.out, err: std.err}
	}
	if s.opts.TTY && !standby {
		// The init makes the terminal in the sandbox's own devpts, where
		// the workload can find it by name, and sends its master here.
		pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil, nil, fmt.Errorf("console socket: %w", err)
		}
		console = os.NewFile(uintptr(pair[0]), "console")
		theirs := os.NewFile(uintptr(pair[1]), "console")
		defer theirs.Close()
		extra[0] = theirs
	}
	if !standby {
		extra = append(extra, s.opts.ExtraFiles...)
	}
	if s.netns != nil {
		// The init joins it; it follows the workload's files. Once the
		// init holds it, the host's copy has served.
		extra = append(extra, s.netns)
		defer s.closeNetns()
	}
	// The bind mounts' sources, which the init attaches; last, so that
	// userMounts knows their numbers.
	extra = append(extra, s.mountSources...)
	defer s.closeMountSources()
	attr := &syscall.SysProcAttr{
		Cloneflags: unix.CLONE_NEWPID | unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWNET,
	}
	if s.hostNetwork() || s.netns != nil {
		attr.Cloneflags &^= unix.CLONE_NEWNET
	}
	if u := sec.UserNamespace; u != nil {
		attr.Cloneflags |= unix.CLONE_NEWUSER
		attr.UidMappings, attr.GidMappings = idMaps(u.UIDMap), idMaps(u.GIDMap)
		// The workload's supplementary groups need setgroups(2).
		attr.GidMappingsEnableSetgroups = true
		// A new user namespace leaves the process with its old host ids,
		// unmapped inside; becoming the namespace's root makes the exec
		// grant it the namespace's capabilities.
		attr.Credential = &syscall.Credential{Uid: 0, Gid: 0}
	}
	// A pool's standby init is never detached: it is the pool's.
	p, err := launchWith(mode, s.cg, std, extra, attr, standby || !s.opts.Detachable)
	// The process has its own copies of a detachable sandbox's output
	// pipes' write ends.
	s.detached.closeWriteEnds()
	if streams.feed != nil {
		// The process has its own copy of the pipe's read end.
		std.in.(*os.File).Close()
	}
	if err == nil {
		streams.feed.start()
		s.streams = streams
	} else {
		streams.release()
	}
	if err != nil {
		if console != nil {
			console.Close()
		}
		return nil, nil, err
	}
	return p, console, nil
}

func idMaps(m []security.IDMap) []syscall.SysProcIDMap {
	out := make([]syscall.SysProcIDMap, len(m))
	for i, e := range m {
		out[i] = syscall.SysProcIDMap{ContainerID: int(e.ContainerID), HostID: int(e.HostID), Size: int(e.Size)}
	}
	return out
}

// attachTerminal takes the terminal the init made and copies between it
// and the sandbox's standard streams.
func (s *Sandbox) attachTerminal(console *os.File) error {
	master, err := receiveFD(console)
	if err != nil {
		return fmt.Errorf("receive the sandbox's terminal: %w", err)
	}
	s.ptyMaster = master
	s.undo = append(s.undo, master.Close)
	if s.opts.Detachable {
		// The supervisor copies it (Supervise).
		return nil
	}
	s.ttyDone = make(chan struct{})
	go func() {
		copyTerminal(s.teeTerminal(s.opts.Stdout), s.ptyMaster)
		close(s.ttyDone)
	}()
	if s.opts.Stdin != nil {
		feed, err := feedInto(master, s.opts.Stdin, false)
		if err != nil {
			return fmt.Errorf("the terminal's input: %w", err)
		}
		feed.start()
		s.streams.feed = feed
	}
	return nil
}

// A launched process is an init or exec helper whose workload runs.
type launched struct {
	cmd     *exec.Cmd
	status  *nsinit.StatusReader
	statusR *os.File
	specW   *os.File // until the spec is sent; a socket for a standby init
	started time.Time
	// recorded is closed once the sandbox's record names this process
	// as its init. Until then the process must not be reaped: its start
	// time, which tells it from a later process with its PID, is read
	// from /proc while it is there, even as a zombie.
	recorded <-chan struct{}
	// cgroupFDs are the process's descriptors of the files it joins its
	// cgroups through, for its spec.
	cgroupFDs []int
}

// abandon kills a process whose workload has not started, and frees what
// the host holds of it.
func (p *launched) abandon() {
	p.cmd.Process.Kill()
	p.cmd.Wait()
	p.statusR.Close()
	if p.specW != nil {
		p.specW.Close()
		p.specW = nil
	}
}

// launch starts this program again as nsinit in mode, with attr's
// namespaces and born into cg. The process waits for its spec, which run
// sends. extra files follow the spec and status pipes, from fd 5.
func launch(mode string, cg *cgroup.Cgroup, std stdio, extra []*os.File, attr *syscall.SysProcAttr) (*launched, error) {
	return launchWith(mode, cg, std, extra, attr, true)
}

// launchWith is launch, with the parent-death signal optional: a
// Detachable sandbox's PID 1 must outlive the thread that forked it,
// which the exec of Supervise ends.
func launchWith(mode string, cg *cgroup.Cgroup, std stdio, extra []*os.File, attr *syscall.SysProcAttr, pdeathsig bool) (*launched, error) {
	self, err := nsinit.SelfExe()
	if err != nil {
		return nil, err
	}
	var specR, specW *os.File
	if mode == nsinit.ModeStandby {
		// Two messages, the second with descriptors: a socket.
		pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("spec socket: %w", err)
		}
		specR, specW = os.NewFile(uintptr(pair[1]), "spec"), os.NewFile(uintptr(pair[0]), "spec")
	} else {
		var err error
		if specR, specW, err = os.Pipe(); err != nil {
			return nil, err
		}
	}
	defer specR.Close()
	statusR, statusW, err := os.Pipe()
	if err != nil {
		specW.Close()
		return nil, err
	}
	defer statusW.Close()
	fail := func(err error) (*launched, error) {
		specW.Close()
		statusR.Close()
		return nil, err
	}

	// If the host dies, so does the sandbox; Recover then reclaims what it
	// left.
	if pdeathsig {
		attr.Pdeathsig = syscall.SIGKILL
	}
	files := append([]*os.File{specR, statusW}, extra...)
	dir, born := cg.V2Dir()
	if born {
		// Born in its cgroup: charged for everything from the first page.
		fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fail(fmt.Errorf("open cgroup %s: %w", dir, err))
		}
		defer unix.Close(fd)
		attr.UseCgroupFD = true
		attr.CgroupFD = fd
	}
	// The process moves itself into the rest of its cgroups first thing,
	// through files opened here: a process moving itself spares the kernel
	// a global lock, and root of a user namespace could not open them.
	join, err := cg.JoinFiles(!born)
	if err != nil {
		return fail(err)
	}
	defer func() {
		for _, f := range join {
			f.Close()
		}
	}()
	var joinFDs []int
	for i := range join {
		joinFDs = append(joinFDs, 3+len(files)+i)
	}
	files = append(files, join...)
	// Last, the file the process executes through; the init closes it.
	files = append(files, self)
	cmd := &exec.Cmd{
		Path:        nsinit.ExecPath(3 + len(files) - 1),
		Args:        []string{"berth-" + mode},
		Env:         []string{nsinit.EnvMode + "=" + mode},
		Stdin:       std.in,
		Stdout:      std.out,
		Stderr:      std.err,
		ExtraFiles:  files,
		SysProcAttr: attr,
	}
	if err := startOnForkThread(cmd); err != nil {
		return fail(fmt.Errorf("start %s: %w", mode, err))
	}
	return &launched{cmd: cmd, status: nsinit.NewStatusReader(statusR), statusR: statusR, specW: specW, started: time.Now(), cgroupFDs: joinFDs}, nil
}

// run sends the spec and waits until the workload's exec has succeeded or
// setting up has failed; on failure the process is gone when it returns.
// Ending ctx kills the process, and run returns ctx's error.
func (p *launched) run(ctx context.Context, spec *nsinit.Spec) error {
	spec.CgroupFDs = p.cgroupFDs
	enc, err := marshalSpec(spec)
	if err != nil {
		p.abandon()
		return err
	}
	// The spec fits the pipe's buffer unless its arguments, environment or
	// seccomp program are large; a writer goroutine, which has the pipe
	// to itself, covers that case without costing the common one. The
	// init reads to EOF, so it waits for the close.
	w := p.specW
	p.specW = nil
	if len(enc) < 60<<10 {
		w.Write(enc)
		w.Close()
	} else {
		go func() {
			// An error means the init is gone, which await reports.
			w.Write(enc)
			w.Close()
		}()
	}
	return p.await(ctx, func(st nsinit.Status) bool { return st.Started })
}

// await reads the process's next report, which want must accept; any
// other outcome kills the process and is returned as the error. Ending
// ctx kills the process, which ends the wait, and await returns ctx's
// error.
func (p *launched) await(ctx context.Context, want func(nsinit.Status) bool) error {
	// No goroutine: a callback that the context's end runs, and none at
	// all for a context that cannot end.
	stop := context.AfterFunc(ctx, func() { p.cmd.Process.Kill() })
	st, err := p.status.Next()
	stop()
	if err == nil && want(st) {
		return nil
	}
	p.abandon()
	var se *nsinit.SetupError
	if errors.As(err, &se) {
		if se.Exec {
			return fmt.Errorf("%w: %w", ErrExec, se)
		}
		return fmt.Errorf("%w: %w", ErrSetup, se)
	}
	if ctx.Err() != nil {
		return stoppedBeforeStart(ctx)
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = errors.New("the sandbox's init exited before starting the workload")
	}
	return fmt.Errorf("%w: %w", ErrSetup, err)
}

// stoppedBeforeStart is the error of a start that ctx ended: ctx's cause,
// so that errors.Is finds context.Canceled or context.DeadlineExceeded.
func stoppedBeforeStart(ctx context.Context) error {
	return fmt.Errorf("stopped before the workload started: %w", context.Cause(ctx))
}

// supervise kills the sandbox when its context ends or its deadline
// passes, and collects its end.
func (s *Sandbox) supervise(ctx context.Context, p *launched) {
	var timeout <-chan time.Time
	if !s.deadline.IsZero() {
		t := time.NewTimer(time.Until(s.deadline))
		defer t.Stop()
		timeout = t.C
	}
	ended := make(chan struct{})
	var final nsinit.Status
	var finalErr error
	go func() {
		defer close(ended)
		for {
			st, err := s.status.Next()
			if err != nil {
				if !errors.Is(err, io.EOF) {
					finalErr = err
				}
				return
			}
			if st.Exited {
				final = st
			}
		}
	}()
	select {
	case <-ended:
	case <-timeout:
		s.mu.Lock()
		s.killed.timeout = true
		s.mu.Unlock()
		s.endWorkload(p)
		<-ended
	case <-ctx.Done():
		s.mu.Lock()
		s.killed.cancel = true
		s.mu.Unlock()
		s.endWorkload(p)
		<-ended
	}
	p.statusR.Close()
	if p.recorded != nil {
		<-p.recorded
	}
	waitErr := s.cmd.Wait()
	if s.handOverToReset() {
		return
	}
	// Nothing reads the workload's input any more, and its output has
	// been copied.
	s.streams.release()
	if s.ttyDone != nil {
		<-s.ttyDone
	}
	// Output copied for a pooled sandbox's workload ends with the last
	// process that held its pipes.
	s.copying.Wait()

	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.result
	r.Exited = time.Now()
	switch {
	case final.Exited:
		r.ExitCode, r.Signal = final.ExitCode, final.Signal
	default:
		// PID 1 itself was killed: by Kill, a timeout, or from outside.
		r.ExitCode, r.Signal = 128+int(syscall.SIGKILL), syscall.SIGKILL
		if ws, ok := s.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			r.ExitCode, r.Signal = 128+int(ws.Signal()), ws.Signal()
		}
	}
	r.TimedOut, r.Canceled = s.killed.timeout, s.killed.cancel
	if stats, err := s.cg.Usage(); err == nil {
		r.PeakMemory, r.CPUTime, r.OOMKilled = stats.MemoryPeak, stats.CPU-s.usageBase.CPU, stats.OOMKills > s.usageBase.OOMKills
	}
	if finalErr != nil {
		s.log.Warn("sandbox status", "id", s.id, "err", finalErr)
	}
	// Copying of non-file stdio ends when the last process holding the
	// pipes is gone, which Wait has seen to.
	var ee *exec.ExitError
	if waitErr != nil && !errors.As(waitErr, &ee) {
		s.waitErr = waitErr
	}
	if s.opts.KeepRootfs {
		// The rootfs, state directory and owner lock stay until Close.
		s.hold.keep()
	}
	if s.pool != nil {
		// The pool tears a used sandbox down while its caller goes on.
		s.pool.discard(s.id, s.undo)
		s.undo = nil
	} else if err := s.cleanup(); err != nil && s.waitErr == nil {
		s.waitErr = err
	}
	close(s.done)
}

// kill ends every process of the sandbox: PID 1 first, whose death makes
// the kernel kill the rest of its PID namespace, and then anything left in
// its cgroup.
func (s *Sandbox) kill() {
	if s.proc != nil {
		s.proc.Signal(syscall.SIGKILL)
	}
	// A paused sandbox's processes take the signal only once thawed.
	if s.cg != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.cg.Thaw(ctx); err != nil {
			s.log.Warn("thaw to kill", "id", s.id, "err", err)
		}
	}
}

// cleanup undoes what Start did, newest first, and reports the first
// failure. Called with s.mu held.
func (s *Sandbox) cleanup() error {
	var first error
	for i := len(s.undo) - 1; i >= 0; i-- {
		if err := s.undo[i](); err != nil {
			s.log.Error("sandbox cleanup", "id", s.id, "err", err)
			if first == nil {
				first = err
			}
		}
	}
	s.undo = nil
	return first
}

// Wait waits for the workload to end and for the sandbox to be torn down,
// and returns how it ended. A workload that exits non-zero is not an
// error: see Result.
//
// When the workload ran, the Result is always returned, and says how it
// ended, even if the error is not nil: the error then reports a failure
// after the workload ended (reaping PID 1, or tearing the sandbox down),
// which does not change the workload's status. A nil Result comes only
// with an error, when no workload ran here to wait for: ErrNotStarted
// (Start not called, or failed), or ErrNotOwner (a handle from Open: Stop
// waits for its end).
func (s *Sandbox) Wait() (*Result, error) {
	s.mu.Lock()
	started, owned := s.started, s.cmd != nil || s.proc == nil
	s.mu.Unlock()
	if !started {
		return nil, ErrNotStarted
	}
	if !owned {
		return nil, ErrNotOwner
	}
	if err := s.detached.watch(); err != nil {
		return nil, err
	}
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.result == nil {
		return nil, fmt.Errorf("sandbox %s: %w", s.id, ErrNotStarted)
	}
	r := *s.result
	return &r, s.waitErr
}

// Signal sends sig to the workload, through PID 1, which passes on every
// signal it can catch. SIGKILL and SIGSTOP go to PID 1 itself: SIGKILL
// ends the whole sandbox.
func (s *Sandbox) Signal(sig os.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil || s.result == nil {
		return ErrNotStarted
	}
	select {
	case <-s.done:
		return ErrNotRunning
	default:
	}
	if err := s.proc.Signal(sig); err != nil {
		if errors.Is(err, os.ErrProcessDone) {
			return ErrNotRunning
		}
		return err
	}
	return nil
}

// Kill ends every process in the sandbox at once, paused or not.
func (s *Sandbox) Kill() error {
	if err := s.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.kill()
	return nil
}

// Close kills the sandbox if it runs, waits for it, and frees everything
// it holds, the rootfs Options.KeepRootfs kept included. It may be called
// any number of times.
func (s *Sandbox) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	started, handle := s.started, s.cmd == nil && s.proc != nil
	s.mu.Unlock()
	if !started {
		return nil
	}
	if handle {
		// Open's: the sandbox is its starter's to end.
		return s.proc.Release()
	}
	s.detached.watch()
	select {
	case <-s.done:
	default:
		s.mu.Lock()
		s.kill()
		s.mu.Unlock()
	}
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.hold.releaseKept(); err != nil {
		s.log.Error("sandbox cleanup", "id", s.id, "err", err)
		return errors.Join(s.waitErr, err)
	}
	return s.waitErr
}

// Stats returns the sandbox's resource use now.
func (s *Sandbox) Stats() (cgroup.Stats, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cg == nil || s.result == nil {
		return cgroup.Stats{}, ErrNotStarted
	}
	select {
	case <-s.done:
		return cgroup.Stats{}, ErrNotRunning
	default:
	}
	return s.cg.Stats()
}

// Pause freezes every process in the sandbox.
func (s *Sandbox) Pause(ctx context.Context) error {
	cg, err := s.runningCgroup()
	if err != nil {
		return err
	}
	return cg.Freeze(ctx)
}

// Resume thaws a paused sandbox.
func (s *Sandbox) Resume(ctx context.Context) error {
	cg, err := s.runningCgroup()
	if err != nil {
		return err
	}
	return cg.Thaw(ctx)
}

func (s *Sandbox) runningCgroup() (*cgroup.Cgroup, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cg == nil || s.result == nil {
		return nil, ErrNotStarted
	}
	select {
	case <-s.done:
		return nil, ErrNotRunning
	default:
	}
	return s.cg, nil
}
