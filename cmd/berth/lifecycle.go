package main

import (
	"context"
	"errors"
	"fmt"
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
			if seconds < 0 {
				return invalidFlag("-t %d: want 0 or more seconds", seconds)
			}
			return eachArg(cmd, args, func(arg string) error {
				grace := stopGrace(cmd, g, arg, seconds)
				if err := g.stop(cmd.Context(), arg, grace); err != nil {
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
		if c != nil && g.orphaned(c.ID) {
			return g.reclaimOrphan(ctx, c.ID)
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

// orphaned reports whether container id's record says its sandbox runs
// while nothing owns it and its supervisor recorded no end: the
// supervisor was killed, and no reaper will come.
func (g *globals) orphaned(id string) bool {
	c, err := loadContainer(g.state, id)
	if err != nil || c.Status != statusRunning {
		return false
	}
	if _, err := os.Stat(filepath.Join(containerDir(g.state, id), containerExit)); err == nil {
		return false // ended; its reaper is on its way
	}
	return !g.owned(c.SandboxID)
}

// reclaimOrphan reclaims the sandbox of container id, whose supervisor
// died (orphaned), as berth gc would, and records its end.
func (g *globals) reclaimOrphan(ctx context.Context, id string) error {
	if err := g.recover(ctx); err != nil {
		return err
	}
	return markOrphanEnded(g.state, id)
}

// markOrphanEnded records that container id's sandbox ended with its
// supervisor, killed.
func markOrphanEnded(stateRoot, id string) error {
	_, err := updateContainer(stateRoot, id, func(c *containerRecord) error {
		if c.Status == statusRunning {
			c.Status, c.Finished = statusExited, time.Now().UTC()
			c.ExitCode, c.Signal = 128+int(syscall.SIGKILL), int(syscall.SIGKILL)
			c.Error = "its supervisor died"
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
		if g.orphaned(c.ID) {
			markOrphanEnded(g.state, c.ID)
		}
	}
}

// owned reports whether a live process (its supervisor, its reaper, or
// the child starting it) still owns the sandbox id, or is about to.
func (g *globals) owned(id string) bool {
	records, err := sandbox.ReadRecords(g.state)
	if err != nil {
		return true
	}
	for _, r := range records {
		if r.ID == id {
			return r.Owned
		}
	}
	return false
}

func newRestartCommand(g *globals) *cobra.Command {
	var seconds int
	cmd := &cobra.Command{
		Use:   "restart [-t SECONDS] CONTAINER...",
		Short: "Stop detached containers (as berth stop does) and start them again",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if seconds < 0 {
				return invalidFlag("-t %d: want 0 or more seconds", seconds)
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
					if g.orphaned(now.ID) {
						if err := g.reclaimOrphan(cmd.Context(), now.ID); err != nil {
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
			return eachArg(cmd, args, func(arg string) error {
				c, err := loadContainer(g.state, arg)
				if err != nil {
					return err
				}
				if c.Running() || c.Status == statusRestarting {
					if !force {
						return fmt.Errorf("container %s is %s: stop it first, or rm -f", arg, c.Status)
					}
					if err := g.stop(cmd.Context(), c.ID, 0); err != nil {
						return err
					}
				}
				if err := removeContainer(g.state, c.ID); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), arg)
				return nil
			})
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "kill a running container first")
	return cmd
}
