package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/layerfs"
	"github.com/berth-dev/berth/sandbox"
)

// newReapCommand is what a detached sandbox's supervisor becomes once
// the workload has ended (see detach.go): it is not for people to run.
func newReapCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:    reapCommand + " CONTAINER [SANDBOX]",
		Short:  "Reclaim a detached sandbox that has ended, and restart or remove its container (run by berth itself)",
		Hidden: true,
		Args:   cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			sandboxID := ""
			if len(args) == 2 {
				sandboxID = args[1]
			}
			return reap(cmd.Context(), g, args[0], sandboxID)
		},
	}
}

// reap reclaims container id's sandbox, records how it ended, and then
// removes the container (--rm), starts it again (--restart) or leaves it
// exited.
func reap(ctx context.Context, g *globals, id, sandboxID string) error {
	if !containerIDRE.MatchString(id) {
		return fmt.Errorf("container ID %q: not an ID", id)
	}
	if c, err := loadContainer(g.state, id); err == nil {
		// Run by hand on a live container, it would record an end that
		// did not happen, and perhaps start a second sandbox.
		if c.Running() && g.sandboxRuns(c.SandboxID) {
			return fmt.Errorf("container %s: its sandbox %s still runs", id, c.SandboxID)
		}
		if sandboxID == "" {
			sandboxID = c.SandboxID
		}
	}
	// The supervisor let go of the sandbox just before it became this
	// process: it is dead, and freed as Recover would free it; but only
	// it, not what other state directories sharing the cgroup parent or
	// the store hold. (The supervisor names it: the record may be gone
	// already, removed by rm -f.)
	rerr := g.reclaim(ctx, sandboxID)
	exit, xerr := readExit(g.state, id)
	var restart bool
	var backoff time.Duration
	c, err := updateContainer(g.state, id, func(c *containerRecord) error {
		c.Finished = time.Now().UTC()
		switch {
		case exit != nil:
			c.ExitCode, c.Signal = exit.ExitCode, exit.Signal
			if t, err := time.Parse(time.RFC3339Nano, exit.Exited); err == nil {
				c.Finished = t
			}
		default:
			// No record of the end: the supervisor could not write one.
			c.ExitCode, c.Signal = 128+int(syscall.SIGKILL), int(syscall.SIGKILL)
			c.Error = fmt.Sprintf("no exit record: %v", xerr)
		}
		if rerr != nil {
			c.Error = fmt.Sprintf("reclaim: %v", rerr)
		}
		restart = !c.Stopped && !c.AutoRemove && c.Restart.shouldRestart(c.ExitCode, c.RestartCount)
		c.Status = statusExited
		if restart {
			c.Status = statusRestarting
			backoff = restartBackoff(c)
			c.RestartCount++
			c.Generation++
		}
		return nil
	})
	if err != nil {
		return err
	}
	if c.AutoRemove && !c.Restarting {
		return removeContainer(g.state, id)
	}
	if !restart {
		return nil
	}
	// A crash loop costs a start every backoff, at most. A stop or rm
	// meanwhile ends the wait, and the restart.
	if !awaitRestart(ctx, g.state, id, c.Generation, backoff) {
		return nil
	}
	// This process becomes the child that starts the container again;
	// it checks, under the record's lock, that no stop came meanwhile.
	child := childCommand(c.Argv, id+"/"+strconv.Itoa(c.Generation), "")
	if c.Dir != "" {
		if err := os.Chdir(c.Dir); err != nil {
			return markFailed(g, id, fmt.Errorf("restart: %w", err))
		}
	}
	err = syscall.Exec("/proc/self/exe", child.Args, child.Env)
	return markFailed(g, id, fmt.Errorf("restart: %w", err))
}

// sandboxRuns reports whether sandbox id may still run: a live process
// owns it, and it is starting or its PID 1 lives. Owned alone would not
// do for the reaper: it has the PID and start time the record names as
// its host (it was the supervisor), and a berth gc reclaiming the
// sandbox meanwhile holds its owner lock.
func (g *globals) sandboxRuns(id string) bool {
	r, err := sandbox.ReadRecord(g.state, id)
	if errors.Is(err, sandbox.ErrNotFound) {
		return false
	}
	return err != nil || r.Owned && (r.State == nil || !r.State.Exited())
}

// awaitRestart waits for backoff to pass, and reports whether container
// id is still to be started again then, as its generation's start.
func awaitRestart(ctx context.Context, stateRoot, id string, generation int, backoff time.Duration) bool {
	deadline := time.Now().Add(backoff)
	for {
		c, err := loadContainer(stateRoot, id)
		if err != nil || c.ID != id || c.Stopped || c.Status != statusRestarting || c.Generation != generation {
			return false
		}
		left := time.Until(deadline)
		if left <= 0 {
			return true
		}
		select {
		case <-time.After(min(left, 100*time.Millisecond)):
		case <-ctx.Done():
			return false
		}
	}
}

// markFailed records that container id could not be started again.
func markFailed(g *globals, id string, err error) error {
	updateContainer(g.state, id, func(c *containerRecord) error {
		c.Status, c.Error = statusExited, err.Error()
		return nil
	})
	return err
}

// restartBackoff is how long the reaper waits before starting c again:
// 100 ms, doubled at each restart up to a minute, as Docker does; back
// to 100 ms when the last run lasted ten seconds or more.
func restartBackoff(c *containerRecord) time.Duration {
	const base, most = 100 * time.Millisecond, time.Minute
	if !c.Started.IsZero() && c.Finished.Sub(c.Started) >= 10*time.Second {
		return base
	}
	d := base << min(c.RestartCount, 10)
	return min(d, most)
}

// reclaim frees the dead sandbox sandboxID, as berth gc would, and the
// cgroup parent if it is left empty.
func (g *globals) reclaim(ctx context.Context, sandboxID string) error {
	if sandboxID == "" {
		return nil // never started
	}
	opts, _, err := g.recoverOptions()
	if err != nil {
		return err
	}
	err = sandbox.Reclaim(ctx, sandboxID, opts)
	opts.Cgroups.RemoveParent()
	return err
}

// recoverOptions are what Recover needs to reclaim any dead sandbox of
// the state directory: the store, the networks, and the plugins that
// sandboxes recorded; and the store.
func (g *globals) recoverOptions() (*sandbox.Options, *layerfs.Store, error) {
	opts, err := g.sandboxOptions()
	if err != nil {
		return nil, nil, err
	}
	store, err := g.store()
	if err != nil {
		return nil, nil, err
	}
	opts.Storage = store
	opts.Backends = pluginBackends{g: g, store: store}
	if opts.Networks, err = g.networks(); err != nil {
		return nil, nil, err
	}
	return opts, store, nil
}
