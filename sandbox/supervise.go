package sandbox

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/sandbox/internal/nsinit"
)

// SuperviseConfig says where a supervisor keeps a sandbox's output and
// exit status, and what it runs once the workload has ended.
type SuperviseConfig struct {
	// Log is the file the workload's output goes to, one line per entry
	// in the format ReadLog reads; it is created if need be (0600) and
	// appended to. Its directory must exist and belong to the host: the
	// supervisor opens the directory once, and the log in it without
	// following a symbolic link.
	Log string
	// LogMaxBytes bounds the log: past it, the file is renamed to
	// Log+".1" (replacing the previous one) and a new one begun, so a
	// sandbox never holds more than about twice this on the host's disk.
	// 0 means DefaultLogMaxBytes; otherwise at least MinLogMaxBytes.
	LogMaxBytes int64
	// Exit is the file the workload's end is written to, atomically, as
	// JSON (ExitStatus), before Then runs. Its directory must exist.
	Exit string
	// Then is the program the supervisor becomes (execve) once the
	// workload has ended, its output is in the log and Exit is written:
	// Then[0] must be an absolute path (os.Executable() for the host
	// program itself), the rest its arguments. The supervisor lets go of
	// the sandbox's owner lock just before, so that Then reclaims the
	// sandbox with Recover (its cgroup, rootfs, network and state), and
	// then does its own bookkeeping. It gets the supervisor's environment
	// less berth's own variables (those starting "_BERTH_"), /dev/null as
	// its standard streams and no other descriptor. Empty means exit,
	// leaving the sandbox to the next Recover.
	Then []string
}

// DefaultLogMaxBytes is SuperviseConfig.LogMaxBytes's default.
const DefaultLogMaxBytes = 16 << 20

// MinLogMaxBytes is the least SuperviseConfig.LogMaxBytes may be: a few
// of the longest entries (16 KiB of text each).
const MinLogMaxBytes = 64 << 10

// ExitStatus is what SuperviseConfig.Exit holds.
type ExitStatus struct {
	ExitCode int    `json:"exitCode"`         // the exit status, or 128+signal
	Signal   int    `json:"signal,omitempty"` // the signal that ended it, if one did
	Exited   string `json:"exited"`           // RFC 3339 with nanoseconds
}

// ErrSupervised means Supervise is handing the sandbox to a supervisor:
// this process no longer waits for it.
var ErrSupervised = errors.New("sandbox handed to a supervisor")

// Supervise replaces the calling process (execve) with berth's
// supervisor: a small C program, no Go runtime, that holds a started
// Detachable sandbox's output pipes (or its terminal) and its PID 1,
// copies the output to cfg.Log, and records how the workload ended in
// cfg.Exit. It is how a sandbox outlives the command that started it:
// fork a process (with Setsid) that starts the sandbox and calls
// Supervise. It returns only on failure, with the sandbox still this
// process's. The process must have nothing else to do: every goroutine
// and thread ends with the exec, and so do the process's other sandboxes
// that have a parent-death signal.
//
// The supervisor keeps the process's PID, so it stays the parent of the
// sandbox's PID 1, and holds the sandbox's owner lock: if it is killed,
// the sandbox is its dead owner's, which Recover kills and reclaims.
// SIGTERM, SIGINT and SIGQUIT sent to it are passed on to the workload
// (through PID 1), whose end it then records as usual; other signals but
// SIGKILL are ignored, SIGHUP among them.
//
// Once the workload's PID 1 has ended and its output is copied (up to
// two seconds more for output a process outside the sandbox may hold
// open), the supervisor writes cfg.Exit and execs cfg.Then. If the log
// cannot be written (the disk is full), output is dropped rather than
// held: the workload is never slowed down by the host's disk, only by
// how fast the supervisor copies.
//
// A Detachable sandbox's Stdin, Stdout and Stderr must be nil, and
// Timeout, KeepRootfs and a Pool are refused. Until Supervise takes it,
// nothing in the process watches it: the end of Start's context does not
// kill it. Wait or Close, called instead of Supervise, watch it as any
// other sandbox, its output discarded; Supervise then refuses it. Reset
// refuses a Detachable sandbox.
func (s *Sandbox) Supervise(cfg *SuperviseConfig) error {
	if err := s.execSupervisor(cfg); err != nil {
		return fmt.Errorf("sandbox %s: supervise: %w", s.id, err)
	}
	return nil
}

// execSupervisor is Supervise, its errors without the sandbox's ID.
func (s *Sandbox) execSupervisor(cfg *SuperviseConfig) error {
	c, err := cfg.checked()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidOptions, err)
	}
	// What the supervisor works in, opened here: it never looks a path
	// up but its files' names in these.
	logDir, err := openDir(filepath.Dir(c.Log))
	if err != nil {
		return fmt.Errorf("the log's directory: %w", err)
	}
	defer logDir.Close()
	exitDir, err := openDir(filepath.Dir(c.Exit))
	if err != nil {
		return fmt.Errorf("the exit file's directory: %w", err)
	}
	defer exitDir.Close()
	var then *os.File
	if len(c.Then) > 0 {
		if then, err = openProgram(c.Then[0]); err != nil {
			return err
		}
		defer then.Close()
	}
	self, err := nsinit.SelfExe()
	if err != nil {
		return err
	}

	s.mu.Lock()
	switch {
	case !s.started || s.result == nil:
		s.mu.Unlock()
		return ErrNotStarted
	case !s.opts.Detachable:
		s.mu.Unlock()
		return fmt.Errorf("%w: the sandbox is not Detachable", ErrInvalidOptions)
	case s.cmd == nil || s.owner == nil:
		s.mu.Unlock()
		return ErrNotOwner
	}
	record, recorded := s.state, s.recorded
	pid := s.cmd.Process.Pid
	s.mu.Unlock()
	d := &s.detached
	if err := d.claim(); err != nil {
		return err
	}
	defer d.unclaim()

	// The record names the supervisor's log (Open's handles read it),
	// and says that only the owner lock tells whether the sandbox lives
	// (surveyStateDir). It replaces the one finishStart writes, which
	// must be written first.
	<-recorded
	record.Log = c.Log
	st, err := procStartTime(pid)
	if err != nil {
		return fmt.Errorf("the sandbox's init: %w", err)
	}
	record.Init = procID{PID: pid, StartTime: st}
	if err := writeState(s.stateDir(), &record); err != nil {
		return err
	}

	// -1 stands for a descriptor the supervisor does not get.
	fd := func(f *os.File) int {
		if f == nil {
			return -1
		}
		return int(f.Fd())
	}
	out, errOut, tty := d.outR, d.errR, 0
	if s.opts.TTY {
		out, errOut, tty = d.master, nil, 1
	}
	passed := []*os.File{d.statusR, out, errOut, s.owner, logDir, exitDir, then}
	settings := fmt.Sprintf("%d %d %d %d %d %d %d %d %d %d", pid, fd(d.statusR), fd(out), fd(errOut),
		fd(s.owner), fd(logDir), fd(exitDir), fd(then), c.LogMaxBytes, tty)
	env := []string{
		nsinit.EnvMode + "=" + nsinit.ModeSupervise,
		nsinit.EnvSupervise + "=" + settings,
		nsinit.EnvSuperviseLog + "=" + filepath.Base(c.Log),
		nsinit.EnvSuperviseExit + "=" + filepath.Base(c.Exit),
	}
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "_BERTH_") {
			env = append(env, e)
		}
	}
	argv := append([]string{"berth-supervise"}, c.Then...)

	// The descriptors pass the exec; the supervisor makes them
	// close-on-exec again at once, and closes them before Then.
	for _, f := range passed {
		if f != nil {
			if _, err := unix.FcntlInt(f.Fd(), unix.F_SETFD, 0); err != nil {
				restoreCloseOnExec(passed)
				return err
			}
		}
	}
	err = syscall.Exec(nsinit.ExecPath(int(self.Fd())), argv, env)
	restoreCloseOnExec(passed)
	return fmt.Errorf("exec the supervisor: %w", err)
}

func restoreCloseOnExec(files []*os.File) {
	for _, f := range files {
		if f != nil {
			unix.FcntlInt(f.Fd(), unix.F_SETFD, unix.FD_CLOEXEC)
		}
	}
}

// checked returns cfg with its defaults, or what is wrong with it.
func (cfg *SuperviseConfig) checked() (*SuperviseConfig, error) {
	if cfg == nil {
		return nil, errors.New("no SuperviseConfig")
	}
	c := *cfg
	c.Then = append([]string(nil), cfg.Then...)
	for _, f := range []struct{ name, path string }{{"Log", c.Log}, {"Exit", c.Exit}} {
		switch {
		case f.path == "":
			return nil, fmt.Errorf("SuperviseConfig.%s: no file", f.name)
		case !filepath.IsAbs(f.path):
			return nil, fmt.Errorf("SuperviseConfig.%s %q is not an absolute path", f.name, f.path)
		case strings.ContainsRune(f.path, 0):
			return nil, fmt.Errorf("SuperviseConfig.%s %q holds a NUL", f.name, f.path)
		}
		base := filepath.Base(filepath.Clean(f.path))
		if base == "/" || base == "." || base == ".." || strings.HasSuffix(f.path, "/") {
			return nil, fmt.Errorf("SuperviseConfig.%s %q names no file", f.name, f.path)
		}
		if len(base) > 250 {
			return nil, fmt.Errorf("SuperviseConfig.%s %q: the file's name is too long", f.name, f.path)
		}
	}
	c.Log, c.Exit = filepath.Clean(c.Log), filepath.Clean(c.Exit)
	if c.Log == c.Exit || c.Log+".1" == c.Exit {
		return nil, fmt.Errorf("SuperviseConfig.Exit %q is one of the log's files", c.Exit)
	}
	switch {
	case c.LogMaxBytes == 0:
		c.LogMaxBytes = DefaultLogMaxBytes
	case c.LogMaxBytes < MinLogMaxBytes:
		return nil, fmt.Errorf("SuperviseConfig.LogMaxBytes %d: below the least of %d", c.LogMaxBytes, MinLogMaxBytes)
	}
	if len(c.Then) > 0 && !filepath.IsAbs(c.Then[0]) {
		return nil, fmt.Errorf("SuperviseConfig.Then[0] %q is not an absolute path", c.Then[0])
	}
	for i, a := range c.Then {
		if strings.ContainsRune(a, 0) {
			return nil, fmt.Errorf("SuperviseConfig.Then[%d] holds a NUL", i)
		}
	}
	return &c, nil
}

func openDir(dir string) (*os.File, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	return os.NewFile(uintptr(fd), dir), nil
}

// openProgram opens the program Then names, so that a mistake is reported
// now rather than when the workload ends, and so that the supervisor runs
// the file that was there now.
func openProgram(path string) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("SuperviseConfig.Then: %w", err)
	}
	fi, err := f.Stat()
	if err == nil && (!fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0) {
		err = errors.New("not an executable file")
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("SuperviseConfig.Then: %s: %w", path, err)
	}
	return f, nil
}

// checkDetachable refuses what a Detachable sandbox cannot do: its output
// is its supervisor's, which outlives this process and cannot copy to
// its writers; nor feed it input, nor keep its deadline.
func (s *Sandbox) checkDetachable() error {
	o := &s.opts
	if !o.Detachable {
		return nil
	}
	switch {
	case s.pool != nil:
		return errors.New("Detachable: a pooled sandbox cannot be detached (its pool owns it)")
	case o.Stdout != nil || o.Stderr != nil:
		return errors.New("Detachable: Stdout and Stderr must be nil (the output goes to the supervisor's log)")
	case o.Stdin != nil:
		return errors.New("Detachable: Stdin must be nil (nothing feeds a detached sandbox's input)")
	case o.Timeout != 0:
		return errors.New("Detachable: Timeout is not supported (stop it with Stop or Kill)")
	case o.KeepRootfs:
		return errors.New("Detachable: KeepRootfs is not supported (a supervised sandbox is reclaimed when it ends)")
	}
	return nil
}

// detached is what a Detachable sandbox's host holds for Supervise: the
// read ends of its output pipes (or its terminal's master) and its PID
// 1's status pipe, which nothing in this process reads, and the in-process
// watch, which starts only if Wait or Close is called instead.
type detached struct {
	mu          sync.Mutex
	outR, errR  *os.File // the output pipes' read ends
	outW, errW  *os.File // their write ends, until PID 1 has them
	master      *os.File // the terminal's master, with TTY
	statusR     *os.File // PID 1's status pipe
	start       func()   // starts watching in this process
	watched     bool     // start has run
	supervising bool     // Supervise is under way
}

// detachedStdio makes the output pipes of a Detachable sandbox's workload.
func (s *Sandbox) detachedStdio() (stdio, error) {
	d := &s.detached
	outR, outW, err := os.Pipe()
	if err != nil {
		return stdio{}, fmt.Errorf("the workload's output: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return stdio{}, fmt.Errorf("the workload's output: %w", err)
	}
	d.outR, d.outW, d.errR, d.errW = outR, outW, errR, errW
	s.undo = append(s.undo, func() error {
		d.outR.Close()
		d.errR.Close()
		return nil
	})
	return stdio{out: outW, err: errW}, nil
}

// closeWriteEnds closes the host's copies of the pipes' write ends once
// PID 1 has its own (or failed to start): the supervisor's reads see the
// end when the sandbox's processes are gone.
func (d *detached) closeWriteEnds() {
	for _, f := range []*os.File{d.outW, d.errW} {
		if f != nil {
			f.Close()
		}
	}
	d.outW, d.errW = nil, nil
}

// hold keeps PID 1 for Supervise; start watches it in this process
// instead, if Wait or Close comes first.
func (d *detached) hold(start func(), p *launched, master *os.File) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.start, d.statusR, d.master = start, p.statusR, master
}

// watch starts watching a Detachable sandbox in this process, for Wait or
// Close, once; its output, which nothing will read, is discarded. It
// fails while Supervise is under way.
func (d *detached) watch() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.start == nil || d.watched {
		return nil
	}
	if d.supervising {
		return ErrSupervised
	}
	d.watched = true
	for _, f := range []*os.File{d.outR, d.errR, d.master} {
		if f != nil {
			go io.Copy(io.Discard, f)
		}
	}
	d.start()
	return nil
}

// claim marks Supervise under way, unless the sandbox is watched here
// already.
func (d *detached) claim() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.start == nil:
		return ErrNotStarted
	case d.watched:
		return fmt.Errorf("%w: Wait or Close was called", ErrNotRunning)
	case d.supervising:
		return errors.New("Supervise is under way")
	}
	d.supervising = true
	return nil
}

// unclaim undoes claim after Supervise failed.
func (d *detached) unclaim() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.supervising = false
}
