package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/internal/clip"
	"github.com/berth-dev/berth/sandbox"
	"github.com/berth-dev/berth/security"
)

// `berth run -d` starts a sandbox that outlives it, without a daemon:
//
//  1. The command (the parent) checks its command line as run does, then
//     starts its own program again with the same command line, in a new
//     session, with /dev/null for standard streams and envDetached
//     naming the write end of a pipe.
//  2. That process (the child) makes the container's record, starts the
//     sandbox with Options.Detachable, writes "ok <ID>" (or "err <status>
//     <message>") to the pipe and calls Supervise, which replaces it with
//     berth's supervisor, a small C program that copies the output to
//     the container's log and records the workload's end.
//  3. The parent prints the ID once it reads "ok", and exits: the sandbox
//     depends on it no more. Killed before, it leaves the child going.
//  4. The supervisor, once the workload has ended, becomes `berth
//     reap-container ID SANDBOX` (the reaper), which reclaims the sandbox with
//     sandbox.Reclaim, records the end and, per --rm or --restart,
//     removes the container or starts the child again, by exec.
const (
	// envDetached marks the child; its value is the pipe's descriptor,
	// or empty for a child that reports to no one (a restart).
	envDetached = "_BERTH_DETACHED"
	// envContainer names the container a child starts again, instead
	// of making a new one, as ID/GENERATION: the start the record asks
	// for (containerRecord.Generation), so that of two starts of one
	// container (the reaper's and berth restart's) only the one asked
	// for last goes ahead.
	envContainer = "_BERTH_CONTAINER"
	// reapCommand is the hidden command the supervisor becomes.
	reapCommand = "reap-container"
)

// argvKey is the context key of berth's command line (execute puts it
// there), which the detached child runs again.
type argvKey struct{}

// detachFlags are run's flags for detached sandboxes.
type detachFlags struct {
	detach, autoRemove bool
	name, restart      string
	policy             restartPolicy
}

func (f *detachFlags) add(cmd *cobra.Command) {
	cmd.Flags().BoolVarP(&f.detach, "detach", "d", false, "run in the background: print the sandbox's ID and exit, leaving it running (its output goes to berth logs)")
	cmd.Flags().StringVar(&f.name, "name", "", "name the sandbox; other commands take the name as well as the ID")
	cmd.Flags().BoolVar(&f.autoRemove, "rm", false, "with -d, remove the container once it exits (without -d, the sandbox never stays)")
	cmd.Flags().StringVar(&f.restart, "restart", "no", "with -d, restart the container when it exits: no, on-failure[:N] (at most N times) or always (until berth stop)")
}

// check checks the flags against each other and run's others, so that a
// mistake is reported by the command, at once, and not by the child.
func (f *detachFlags) check(cmd *cobra.Command, opts *sandbox.Options, plugins bool, commit string) error {
	var err error
	if f.policy, err = parseRestartPolicy(f.restart); err != nil {
		return usageError{err}
	}
	if f.name != "" {
		if err := checkContainerName(f.name); err != nil {
			return usageError{err}
		}
	}
	if !f.detach {
		if f.policy.Name != "no" {
			return invalidFlag("--restart %s: only for a detached sandbox (-d)", f.restart)
		}
		return nil
	}
	switch {
	case f.autoRemove && f.policy.Name != "no":
		return invalidFlag("--rm and --restart %s: a container removed when it exits cannot be restarted", f.restart)
	case cmd.Flags().Changed("interactive"):
		return invalidFlag("-i with -d: a detached sandbox has no input")
	case opts.Timeout > 0:
		return invalidFlag("--timeout with -d: a detached sandbox runs until stopped (berth stop -t)")
	case commit != "":
		return invalidFlag("--commit with -d: commit a running sandbox with berth commit")
	case plugins:
		return invalidFlag("-d with a storage or network plugin: plugins end with the berth that started them")
	}
	return nil
}

// nameTaken fails with sandbox.ErrNameInUse if a container has name: a
// foreground sandbox may not take the name of a container, even one that
// has exited, for commands would not know which the name meant.
func nameTaken(stateRoot, name string) error {
	if name == "" {
		return nil
	}
	if _, err := os.Lstat(nameLink(stateRoot, name)); err == nil {
		return fmt.Errorf("name %s: %w (by a container: berth rm it first)", name, sandbox.ErrNameInUse)
	}
	return nil
}

// detachedChild reports whether this process is run -d's child.
func detachedChild() bool {
	_, ok := os.LookupEnv(envDetached)
	return ok
}

// startDetached is the parent's part: it starts the child and waits for
// its word. It prints the sandbox's ID, and returns it.
func startDetached(cmd *cobra.Command, g *globals, name string) (string, error) {
	argv, _ := cmd.Context().Value(argvKey{}).([]string)
	if argv == nil {
		return "", errors.New("run -d: berth's command line is unknown (not run from main)")
	}
	if err := nameTaken(g.state, name); err != nil {
		return "", err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return "", err
	}
	defer r.Close()
	child := childCommand(argv, "", "3")
	child.ExtraFiles = []*os.File{w}
	err = child.Start()
	w.Close()
	if err != nil {
		return "", fmt.Errorf("start the detached berth: %w", err)
	}
	id, werr := readWord(cmd.Context(), r)
	if werr == nil {
		// It goes on, a supervisor soon; it is no longer ours to wait.
		child.Process.Release()
		awaitSupervised(cmd.Context(), g.state, id)
		fmt.Fprintln(cmd.OutOrStdout(), id)
		return id, nil
	}
	var se *startError
	if errors.As(werr, &se) {
		child.Wait()
		fmt.Fprintf(cmd.ErrOrStderr(), "berth: %s\n", clip.Text(se.msg))
		return "", exitError(se.code)
	}
	if cmd.Context().Err() != nil {
		// Interrupted: the child carries on, in a session of its own.
		child.Process.Release()
		return "", werr
	}
	err = child.Wait()
	return "", fmt.Errorf("%w: the detached berth ended without starting the sandbox (%v): %w", sandbox.ErrSetup, err, werr)
}

// supervisedWait bounds how long run -d waits, once the sandbox runs,
// for its supervisor to take it over: a few milliseconds, the exec of
// a small program.
const supervisedWait = 5 * time.Second

// awaitSupervised waits until the supervisor has the sandbox id, so that
// once run -d has returned its output is being logged, and its record
// names the log (State.Log) for Open's handles; or until the sandbox has
// ended already, or supervisedWait has passed.
func awaitSupervised(ctx context.Context, stateRoot, id string) {
	deadline := time.Now().Add(supervisedWait)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		// Its record alone: with a thousand sandboxes, reading them all
		// every few milliseconds was most of run -d's time.
		st, err := sandbox.ReadState(stateRoot, id)
		if err != nil || st.Log != "" {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// childCommand is berth started again with argv (berth's arguments), as
// run -d's child: in a session of its own, so that a terminal's signals
// and hangup do not reach it, with /dev/null for standard streams.
func childCommand(argv []string, container, reportFD string) *exec.Cmd {
	// The program that runs now, even if its file has been replaced.
	c := exec.Command("/proc/self/exe", argv...)
	c.Args[0] = "berth"
	env := []string{envDetached + "=" + reportFD}
	if container != "" {
		env = append(env, envContainer+"="+container)
	}
	c.Env = append(withoutBerthEnv(os.Environ()), env...)
	c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	return c
}

// withoutBerthEnv is env less berth's own markers.
func withoutBerthEnv(env []string) []string {
	out := env[:0:0]
	for _, e := range env {
		if !strings.HasPrefix(e, envDetached+"=") && !strings.HasPrefix(e, envContainer+"=") {
			out = append(out, e)
		}
	}
	return out
}

// A startError is the child's report of a failed start.
type startError struct {
	code int
	msg  string
}

func (e *startError) Error() string { return e.msg }

// maxWord bounds the child's report.
const maxWord = 64 << 10

// readWord reads the child's report: the sandbox's ID, or a *startError.
func readWord(ctx context.Context, r *os.File) (string, error) {
	type word struct {
		line string
		err  error
	}
	ch := make(chan word, 1)
	go func() {
		line, err := bufio.NewReaderSize(io.LimitReader(r, maxWord), 4096).ReadString('\n')
		ch <- word{line, err}
	}()
	var w word
	select {
	case w = <-ch:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	if w.err != nil {
		if errors.Is(w.err, io.EOF) {
			return "", errors.New("no report")
		}
		return "", w.err
	}
	line := strings.TrimSuffix(w.line, "\n")
	if id, ok := strings.CutPrefix(line, "ok "); ok {
		return id, nil
	}
	if rest, ok := strings.CutPrefix(line, "err "); ok {
		code, msg, _ := strings.Cut(rest, " ")
		n, err := strconv.Atoi(code)
		if err != nil || n < 1 || n > 255 {
			n = exitSetup
		}
		return "", &startError{code: n, msg: msg}
	}
	return "", fmt.Errorf("unexpected report %s", clip.Quote(line))
}

// lastSandbox is what a container's record keeps of its sandbox st, for
// after it has gone: what it ran and with which settings. Not its
// seccomp profile, the bulk of a record, nor what named the running
// sandbox's processes, mounts and cgroups, stale once it has gone; of
// its security settings, only the limits inspect shows.
func lastSandbox(st sandbox.State) *sandbox.State {
	last := &sandbox.State{
		ID: st.ID, Image: st.Image, Args: st.Args, Command: st.Command, Created: st.Created,
		Hostname: st.Hostname, Name: st.Name, Labels: st.Labels, Mounts: st.Mounts, Resources: st.Resources,
		ImageDigest: st.ImageDigest, Env: st.Env, User: st.User, Dir: st.Dir,
	}
	if sec := st.Security; sec != nil {
		last.Security = &security.Config{MemoryMax: sec.MemoryMax, PidsMax: sec.PidsMax}
	}
	return last
}

// restartImage is the image a detached child starts: image, the one
// named on the command line, for a new container; for one started again
// (by its restart policy or berth restart), the image its last sandbox
// ran, by digest, as Docker's restarts run the image the container was
// made from and not whatever its tag names by then. An image that has
// left the store since is an error that says so.
func (g *globals) restartImage(image string) (string, error) {
	id, _, ok := strings.Cut(os.Getenv(envContainer), "/")
	if !ok {
		return image, nil
	}
	c, err := loadContainer(g.state, id)
	if err != nil || c.ID != id || c.Last == nil || c.Last.ImageDigest == "" {
		return image, nil // never started, or by an older berth
	}
	s, err := g.store()
	if err != nil {
		return "", err
	}
	if _, err := s.Image(context.Background(), c.Last.ImageDigest); err != nil {
		return "", fmt.Errorf("%w: container %s: the image it was started from, %s (%s then), is no longer in the store: %w",
			sandbox.ErrSetup, c.ID[:12], c.Last.ImageDigest, clip.Quote(image), err)
	}
	return c.Last.ImageDigest, nil
}

// runDetachedChild is the child's part: it starts the sandbox sb, whose
// options are run's, and hands it to the supervisor. It returns only if
// the sandbox could not be started or supervised.
func runDetachedChild(cmd *cobra.Command, g *globals, sb *sandbox.Sandbox, image string, opts *sandbox.Options, df *detachFlags) error {
	var report *os.File
	if fd := os.Getenv(envDetached); fd != "" {
		n, err := strconv.Atoi(fd)
		if err != nil || n < 3 {
			return fmt.Errorf("%s=%s: not a descriptor", envDetached, clip.Quote(fd))
		}
		report = os.NewFile(uintptr(n), "report")
		syscall.CloseOnExec(n)
		defer report.Close()
	}
	existing, generation, _ := strings.Cut(os.Getenv(envContainer), "/")
	os.Unsetenv(envDetached)
	os.Unsetenv(envContainer)
	// A parent killed meanwhile makes writes fail, which changes nothing:
	// the sandbox runs on.
	say := func(format string, a ...any) {
		if report != nil {
			fmt.Fprintf(report, format, a...)
		}
	}
	fail := func(err error) error {
		msg := strings.ReplaceAll(clip.Text(err.Error()), "\n", " ")
		say("err %d %s\n", exitCode(cmd, err), msg)
		return err
	}
	id, err := claimContainer(cmd, g, sb, existing, generation, image, opts, df)
	if err != nil {
		return fail(err)
	}
	if err := sb.Start(cmd.Context()); err != nil {
		if existing == "" {
			removeContainer(g.state, id)
		} else {
			updateContainer(g.state, id, func(c *containerRecord) error {
				if c.SandboxID == sb.ID() {
					c.Status, c.ExitCode, c.Error, c.Finished = statusExited, exitCode(cmd, err), err.Error(), time.Now().UTC()
				}
				return nil
			})
		}
		return fail(err)
	}
	_, err = updateContainer(g.state, id, func(c *containerRecord) error {
		if c.Stopped {
			// berth stop or rm -f came while it started.
			return errNotRestarting
		}
		c.Status, c.Started, c.Finished, c.ExitCode, c.Signal = statusRunning, time.Now().UTC(), time.Time{}, 0, 0
		c.Last = lastSandbox(sb.State())
		c.Ports = nil
		if a := sb.Attachment(); a != nil {
			c.Ports = a.Ports
		}
		return nil
	})
	if err != nil {
		// Stopped or removed while it started: it goes.
		sb.Close()
		updateContainer(g.state, id, func(c *containerRecord) error {
			if c.SandboxID == sb.ID() {
				c.Status, c.Finished = statusExited, time.Now().UTC()
				c.ExitCode, c.Signal = 128+int(syscall.SIGKILL), int(syscall.SIGKILL)
			}
			return nil
		})
		return fail(err)
	}
	say("ok %s\n", id)
	if report != nil {
		report.Close()
	}
	dirPath := containerDir(g.state, id)
	then := []string{"/proc/self/exe"}
	then = append(then, g.flags()...)
	then = append(then, reapCommand, id, sb.ID())
	err = sb.Supervise(&sandbox.SuperviseConfig{
		Log:  filepath.Join(dirPath, containerLog),
		Exit: filepath.Join(dirPath, containerExit),
		Then: then,
	})
	// Still ours: it ends here, and the record says why.
	sb.Close()
	updateContainer(g.state, id, func(c *containerRecord) error {
		c.Status, c.Error, c.Finished = statusExited, err.Error(), time.Now().UTC()
		return nil
	})
	return err
}

// claimContainer makes the record of a new container for sb, or, for
// the start of container existing again, takes its record for sb if
// the start is the one asked for (generation). It returns the
// container's ID.
func claimContainer(cmd *cobra.Command, g *globals, sb *sandbox.Sandbox, existing, generation, image string, opts *sandbox.Options, df *detachFlags) (string, error) {
	// This process, which becomes the supervisor and the reaper.
	self, err := thisProcess()
	if err != nil {
		return "", err
	}
	if existing != "" {
		_, err := updateContainer(g.state, existing, func(c *containerRecord) error {
			if c.Stopped || c.Status != statusRestarting || strconv.Itoa(c.Generation) != generation {
				return errNotRestarting
			}
			c.SandboxID, c.Status, c.Error, c.Supervisor = sb.ID(), statusCreated, "", self
			return nil
		})
		if err != nil {
			return "", err
		}
		// The last run's end is not this one's (see orphaned).
		os.Remove(filepath.Join(containerDir(g.state, existing), containerExit))
		return existing, nil
	}
	argv, _ := cmd.Context().Value(argvKey{}).([]string)
	dir, _ := os.Getwd()
	c := &containerRecord{
		ID: sb.ID(), Name: df.name, Created: time.Now().UTC(), Image: image, Command: opts.Args, Labels: opts.Labels,
		Argv: argv, Dir: dir, Restart: df.policy, AutoRemove: df.autoRemove,
		SandboxID: sb.ID(), Status: statusCreated, Supervisor: self,
	}
	if cmd.Flags().Changed("stop-timeout") {
		seconds := int(opts.Grace / time.Second)
		c.StopTimeout = &seconds
	}
	return c.ID, createContainer(g.state, c)
}

// stillRestarting fails if this process is the child that starts a
// container again (envContainer) and the container was stopped or
// removed meanwhile: before run opens the store, which a removed
// container's --root may no longer have. runDetachedChild checks again,
// under the record's lock.
func stillRestarting(g *globals) error {
	id, _, ok := strings.Cut(os.Getenv(envContainer), "/")
	if !ok || !detachedChild() {
		return nil
	}
	if c, err := loadContainer(g.state, id); err != nil || c.ID != id || c.Stopped {
		return errNotRestarting
	}
	return nil
}

// errNotRestarting is a restart's child finding its container stopped or
// removed meanwhile.
var errNotRestarting = errors.New("the container was stopped or removed meanwhile")

// flags are the global flags, as a command line for another berth.
func (g *globals) flags() []string {
	var out []string
	if g.root != "" {
		out = append(out, "--root", absPath(g.root))
	}
	out = append(out, "--state", absPath(g.state), "--cgroup-parent", g.cgroupParent)
	if g.debug {
		out = append(out, "--debug")
	}
	return out
}

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}
