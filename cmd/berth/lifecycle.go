package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/internal/clip"
	"github.com/berth-dev/berth/sandbox"
)

// The commands that act on a container through its life: stop, restart,
// wait and rm. Each takes names or IDs (or ID prefixes), several at once,
// and goes on to the next when one fails, as Docker's do; the command
// fails if any did.

// reapWait bounds how long stop, restart and rm wait for a container's
// reaper once its sandbox has been killed: the supervisor drains the
// output (two seconds at most), and Recover tears the sandbox down.
const reapWait = 30 * time.Second

// pollInterval is how often a command looks at a container's record
// while it waits for it to change.
const pollInterval = 50 * time.Millisecond

// maxConcurrentArgs bounds how many containers stop and rm end at once:
// ending one is mostly waiting (for its grace, then for its reaper's
// teardown), and one after another, 1,000 took minutes.
const maxConcurrentArgs = 8

// eachArgConcurrently is eachArg for stop and rm: fn runs for up to
// maxConcurrentArgs arguments at once, and writes what it prints to out.
// That, and each failure, is printed in the arguments' order, each as
// soon as the arguments before it are done.
func eachArgConcurrently(cmd *cobra.Command, args []string, fn func(arg string, out io.Writer) error) error {
	type result struct {
		out  bytes.Buffer
		err  error
		done chan struct{}
	}
	results := make([]*result, len(args))
	for i := range results {
		results[i] = &result{done: make(chan struct{})}
	}
	slots := make(chan struct{}, maxConcurrentArgs)
	ctx := cmd.Context()
	go func() {
		for i, a := range args {
			slots <- struct{}{}
			if err := ctx.Err(); err != nil {
				// Interrupted: what has not begun does not, not even
				// in part (a stop would mark its container stopped).
				results[i].err = err
				close(results[i].done)
				<-slots
				continue
			}
			go func() {
				defer func() { <-slots }()
				r := results[i]
				r.err = fn(a, &r.out)
				close(r.done)
			}()
		}
	}()
	var failed error
	for _, r := range results {
		<-r.done
		cmd.OutOrStdout().Write(r.out.Bytes())
		if r.err != nil {
			fmt.Fprintf(cmd.ErrOrStderr(), "berth: %s\n", clip.Text(r.err.Error()))
			failed = exitError(exitFailure)
		}
	}
	return failed
}

// eachArg runs fn for every argument, printing each failure and
// carrying on; it fails if one did.
func eachArg(cmd *cobra.Command, args []string, fn func(arg string) error) error {
	var failed error
	for _, a := range args {
		if err := fn(a); err != nil {
			fmt.Fprintf(cmd.ErrOrStderr(), "berth: %s\n", clip.Text(err.Error()))
			failed = exitError(exitFailure)
		}
	}
	return failed
}

func newStopCommand(g *globals) *cobra.Command {
	var seconds int
	cmd := &cobra.Command{
		Use:   "stop [-t SECONDS] CONTAINER...",
		Short: "Stop sandboxes: SIGTERM, then SIGKILL after a grace period",
		Long: `Stop sandboxes: send the workload SIGTERM, and SIGKILL to everything in
the sandbox if it has not ended within the grace period (-t, 10 seconds by
default). A detached container stays, exited, until berth rm, and its
restart policy does not start it again.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := graceSeconds("-t", seconds); err != nil {
				return err
			}
			return eachArgConcurrently(cmd, args, func(arg string, out io.Writer) error {
				grace := stopGrace(cmd, g, arg, seconds)
				if err := g.stop(cmd.Context(), arg, grace); err != nil {
					return err
				}
				fmt.Fprintln(out, arg)
				return nil
			})
		},
	}
	cmd.Flags().IntVarP(&seconds, "time", "t", 10, "seconds to wait for the workload to end before killing it")
	return cmd
}

// stopGrace is the grace stop gives the container arg names: -t's, or
// else the container's --stop-timeout, or else -t's default.
func stopGrace(cmd *cobra.Command, g *globals, arg string, seconds int) time.Duration {
	if !cmd.Flags().Changed("time") {
		if c, err := loadContainer(g.state, arg); err == nil && c.StopTimeout != nil {
			seconds = *c.StopTimeout
		}
	}
	return time.Duration(seconds) * time.Second
}

// stop stops the container or sandbox arg names, and waits until it has
// ended and, for a container, been reaped.
func (g *globals) stop(ctx context.Context, arg string, grace time.Duration) error {
	c, err := loadContainer(g.state, arg)
	if errors.Is(err, errContainerNotFound) {
		// A sandbox in the foreground of another berth: that berth
		// exits with its status.
		return g.stopSandbox(ctx, arg, grace, nil)
	}
	if err != nil {
		return err
	}
	c, err = updateContainer(g.state, c.ID, func(c *containerRecord) error {
		c.Stopped = true
		if c.Status == statusRestarting {
			// Between two runs: the reaper's next start sees the mark and
			// does not happen.
			c.Status = statusExited
		}
		return nil
	})
	if err != nil {
		return err
	}
	if !c.Running() {
		return nil
	}
	return g.stopSandbox(ctx, c.SandboxID, grace, c)
}

// stopSandbox ends the sandbox id (of container c, if not nil): SIGTERM,
// then after grace SIGKILL, then waits for it to be gone.
func (g *globals) stopSandbox(ctx context.Context, id string, grace time.Duration, c *containerRecord) error {
	opts, err := g.sandboxOptions()
	if err != nil {
		return err
	}
	sb, err := sandbox.Open(ctx, id, opts)
	switch {
	case errors.Is(err, sandbox.ErrNotRunning), errors.Is(err, sandbox.ErrNotFound) && c != nil:
		// Ended already, or its supervisor died: see it reaped.
		return g.awaitReaped(ctx, id, c)
	case err != nil:
		return err
	}
	defer sb.Close()
	// TERM, grace, KILL; it returns once PID 1 has exited.
	if err := sb.Stop(ctx, grace); err != nil && !errors.Is(err, sandbox.ErrNotRunning) {
		return err
	}
	return g.awaitReaped(ctx, id, c)
}

// sandboxEnded reports whether the sandbox id has ended: for container c,
// its record no longer says it runs it; for a foreground one, its owner
// no longer has it running.
func (g *globals) sandboxEnded(ctx context.Context, id string, c *containerRecord) bool {
	if c != nil {
		now, err := loadContainer(g.state, c.ID)
		return err != nil || now.SandboxID != id || !now.Running()
	}
	opts := &sandbox.Options{StateDir: g.state}
	sb, err := sandbox.Open(ctx, id, opts)
	if err != nil {
		return true
	}
	sb.Close()
	return false
}

// awaitReaped waits until container c's reaper has recorded the end of
// its sandbox id (for a foreground sandbox, until it is gone). A sandbox
// whose supervisor died has no reaper: once it has no owner, it is
// reclaimed here, and the end recorded.
func (g *globals) awaitReaped(ctx context.Context, id string, c *containerRecord) error {
	ended := func() bool { return g.sandboxEnded(ctx, id, c) }
	deadline := time.Now().Add(reapWait)
	for !ended() {
		if c != nil {
			if sid := g.orphaned(c.ID); sid != "" {
				return g.reclaimOrphan(ctx, c.ID, sid)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sandbox %s: still not reaped after %v", id, reapWait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pollInterval):
		}
	}
	return nil
}

// orphaned returns the sandbox of container id if no one will record its
// end: the record says it starts, runs, or is to start again, while the
// process that started it (which becomes its supervisor, its reaper and
// the next start, with one PID) is dead: killed while it started it, as
// supervisor or as reaper. It returns "" if not.
//
// For a record that names no supervisor's process (made by an older
// berth), a sandbox that runs is orphaned once nothing owns it and no
// exit record says its supervisor saw its end. The owner is looked at
// before the exit record: the supervisor writes the record and only then
// lets go of the owner lock, for its reaper, so a sandbox found without
// an owner and then without an exit record had no supervisor to write
// one. (The other way round, an exit record written just after the look
// and a lock let go just before the next one made a sandbox on its way to
// its reaper look orphaned: stop then recorded 137 for a workload that
// had exited 7.)
func (g *globals) orphaned(id string) string {
	c, err := loadContainer(g.state, id)
	if err != nil {
		return ""
	}
	switch {
	case (c.Status == statusRestarting || c.Status == statusCreated) && c.supervisorGone():
		// The reaper died while it waited to start it again, or the
		// child while it started it.
		return c.SandboxID
	case c.Status != statusRunning || g.owned(c.SandboxID):
		return ""
	case c.Supervisor != nil:
		if c.supervisorGone() {
			return c.SandboxID
		}
		return ""
	case exited(g.state, id):
		return "" // ended; its reaper is on its way
	}
	return c.SandboxID
}

// exited reports whether the supervisor of container id's current
// sandbox recorded its end.
func exited(stateRoot, id string) bool {
	_, err := os.Lstat(filepath.Join(containerDir(stateRoot, id), containerExit))
	return err == nil
}

// reclaimOrphan reclaims the sandbox sandboxID of container id, whose
// supervisor or reaper died (orphaned), as berth gc would, and records
// its end.
func (g *globals) reclaimOrphan(ctx context.Context, id, sandboxID string) error {
	if err := g.reclaim(ctx, sandboxID); err != nil {
		return err
	}
	return markOrphanEnded(g.state, id, sandboxID)
}

// markOrphanEnded records the end of container id's orphaned sandbox
// sandboxID: as its supervisor recorded it, if it did before its reaper
// died, or else killed with its supervisor. It changes nothing if the
// record has moved on meanwhile (a reaper recorded the end, or a restart
// began another sandbox).
func markOrphanEnded(stateRoot, id, sandboxID string) error {
	_, err := updateContainer(stateRoot, id, func(c *containerRecord) error {
		if c.SandboxID != sandboxID || c.Supervisor != nil && !c.supervisorGone() {
			return nil
		}
		switch {
		case c.Status == statusRestarting && c.Supervisor != nil:
			c.Status, c.Error = statusExited, "its reaper died before it started again"
		case c.Status == statusCreated && c.Supervisor != nil:
			c.Status, c.Finished, c.Error = statusExited, time.Now().UTC(), "the berth starting it died"
			c.ExitCode, c.Signal = 128+int(syscall.SIGKILL), int(syscall.SIGKILL)
		case c.Status != statusRunning:
		case c.Supervisor == nil && exited(stateRoot, id):
			// Its reaper is on its way.
		default:
			c.Status, c.Finished = statusExited, time.Now().UTC()
			c.ExitCode, c.Signal = 128+int(syscall.SIGKILL), int(syscall.SIGKILL)
			c.Error = "its supervisor died"
			if exit, err := readExit(stateRoot, id); err == nil {
				c.ExitCode, c.Signal = exit.ExitCode, exit.Signal
				if t, err := time.Parse(time.RFC3339Nano, exit.Exited); err == nil {
					c.Finished = t
				}
				c.Error = "its reaper died"
			}
		}
		return nil
	})
	return err
}

// settleOrphans records the end of every orphaned container, for gc,
// whose Recover has reclaimed their sandboxes.
func (g *globals) settleOrphans() {
	cs, err := listContainers(g.state)
	if err != nil {
		return
	}
	for _, c := range cs {
		if sid := g.orphaned(c.ID); sid != "" {
			markOrphanEnded(g.state, c.ID, sid)
		}
	}
}

// owned reports whether a live process (its supervisor, its reaper, or
// the child starting it) still owns the sandbox id, or is about to.
func (g *globals) owned(id string) bool {
	r, err := sandbox.ReadRecord(g.state, id)
	if errors.Is(err, sandbox.ErrNotFound) {
		return false
	}
	return err != nil || r.Owned
}

func newRestartCommand(g *globals) *cobra.Command {
	var seconds int
	cmd := &cobra.Command{
		Use:   "restart [-t SECONDS] CONTAINER...",
		Short: "Stop detached containers (as berth stop does) and start them again",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := graceSeconds("-t", seconds); err != nil {
				return err
			}
			return eachArg(cmd, args, func(arg string) error {
				c, err := loadContainer(g.state, arg)
				if err != nil {
					return err
				}
				_, err = updateContainer(g.state, c.ID, func(c *containerRecord) error {
					c.Restarting = true
					return nil
				})
				if err != nil {
					return err
				}
				if err := g.stop(cmd.Context(), c.ID, stopGrace(cmd, g, c.ID, seconds)); err != nil {
					return err
				}
				if err := g.startAgain(cmd, c.ID); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), arg)
				return nil
			})
		},
	}
	cmd.Flags().IntVarP(&seconds, "time", "t", 10, "seconds to wait for the workload to end before killing it")
	return cmd
}

// startAgain starts a new sandbox for the exited container id, as run -d
// started its first, and waits until it runs.
func (g *globals) startAgain(cmd *cobra.Command, id string) error {
	c, err := updateContainer(g.state, id, func(c *containerRecord) error {
		if c.Running() {
			return fmt.Errorf("container %s: already running", id)
		}
		c.Stopped, c.Restarting, c.Status = false, false, statusRestarting
		c.Generation++
		// The last supervisor is dead: the child started below
		// records itself once it runs the sandbox.
		c.Supervisor = nil
		return nil
	})
	if err != nil {
		return err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	child := childCommand(c.Argv, id+"/"+strconv.Itoa(c.Generation), "3")
	child.Dir = c.Dir
	child.ExtraFiles = []*os.File{w}
	err = child.Start()
	w.Close()
	if err != nil {
		return markFailed(g, id, fmt.Errorf("start the detached berth: %w", err))
	}
	_, werr := readWord(cmd.Context(), r)
	if werr == nil {
		child.Process.Release()
		if now, err := loadContainer(g.state, id); err == nil {
			awaitSupervised(cmd.Context(), g.state, now.SandboxID)
		}
		return nil
	}
	if cmd.Context().Err() == nil {
		child.Wait()
	} else {
		child.Process.Release()
	}
	return fmt.Errorf("container %s: %w", id, werr)
}

func newWaitCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "wait CONTAINER...",
		Short: "Wait for detached containers to exit, and print their exit statuses",
		Long: `Wait for detached containers to exit, and print the exit status of each,
one a line. A container that a restart policy starts again is waited for
until it stays exited. wait exits 0 once it has printed them all.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return eachArg(cmd, args, func(arg string) error {
				c, err := loadContainer(g.state, arg)
				if err != nil {
					return err
				}
				for {
					now, err := loadContainer(g.state, c.ID)
					if err != nil {
						return fmt.Errorf("container %s: removed while waited for: %w", arg, err)
					}
					if now.Status == statusExited {
						fmt.Fprintln(cmd.OutOrStdout(), now.ExitCode)
						return nil
					}
					if sid := g.orphaned(now.ID); sid != "" {
						if err := g.reclaimOrphan(cmd.Context(), now.ID, sid); err != nil {
							return err
						}
						continue
					}
					select {
					case <-cmd.Context().Done():
						return cmd.Context().Err()
					case <-time.After(pollInterval):
					}
				}
			})
		},
	}
}

func newRmCommand(g *globals) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "rm [-f] CONTAINER...",
		Short: "Remove exited detached containers: their records, logs and names",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return eachArgConcurrently(cmd, args, func(arg string, out io.Writer) error {
				c, err := loadContainer(g.state, arg)
				if err != nil {
					return err
				}
				stopped := false
				if c.Running() || c.Status == statusRestarting {
					if !force {
						return fmt.Errorf("container %s is %s: stop it first, or rm -f", arg, c.Status)
					}
					if err := g.stop(cmd.Context(), c.ID, 0); err != nil {
						return err
					}
					stopped = true
				}
				// An --rm container's reaper may have removed it since.
				if err := removeContainer(g.state, c.ID); err != nil && !(stopped && errors.Is(err, errContainerNotFound)) {
					return err
				}
				fmt.Fprintln(out, arg)
				return nil
			})
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "kill a running container first")
	return cmd
}
