package sandbox

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/internal/clip"
	"github.com/berth-dev/berth/layerfs"
)

// Open returns a handle on a running sandbox that another process
// started, found by its name (Options.Name), or else by its ID or a unique
// prefix of it (at least 4 characters), in opts.StateDir.
// The handle can Exec, Signal, Stop, Kill, Pause, Resume and read Stats;
// Wait and Close belong to the process that started the sandbox, and
// Close on the handle only lets it go.
func Open(ctx context.Context, id string, opts *Options) (*Sandbox, error) {
	o := Options{}
	if opts != nil {
		o = *opts
	}
	s := New("", &o)
	st, err := findState(ctx, s.stateRoot(), id)
	if err != nil {
		return nil, err
	}
	if st.Pending || !st.Init.alive() || !st.Alive() {
		return nil, fmt.Errorf("sandbox %s: %w", st.ID, ErrNotRunning)
	}
	proc, err := os.FindProcess(st.Init.PID)
	if err != nil {
		return nil, err
	}
	// The handle is a pidfd now; if the pid still names the same process
	// after taking it, it will for as long as the handle lives.
	if !st.Init.alive() {
		proc.Release()
		return nil, fmt.Errorf("sandbox %s: %w", st.ID, ErrNotRunning)
	}

	s.id, s.ref, s.state, s.rootfs, s.proc = st.ID, st.Image, *st, st.Rootfs, proc
	s.opts.Env, s.opts.User, s.opts.Dir, s.opts.Security = st.Env, st.User, st.Dir, st.Security
	s.started = true
	s.result = &Result{Started: st.Created}
	if s.storage = o.Storage; s.storage == nil {
		if s.storage, err = layerfs.Open(firstNonEmpty(st.Store, layerfs.DefaultRoot()), &layerfs.Options{Logger: s.log}); err != nil {
			return nil, err
		}
	}
	// An image removed from the store since the sandbox started (berth
	// image rm -f) must not leave it beyond Stop and Kill: the handle
	// then has no image, and only Exec, which needs the image's
	// defaults, refuses.
	if s.img, err = s.storage.Image(ctx, st.ImageDigest); errors.Is(err, layerfs.ErrNotFound) {
		s.log.Warn("open sandbox: its image has left the store", "id", st.ID, "image", st.ImageDigest)
	} else if err != nil {
		return nil, fmt.Errorf("sandbox %s: %w", st.ID, err)
	}
	cgm := o.Cgroups
	if cgm == nil {
		if cgm, err = cgroup.NewManager(cgroup.Options{Parent: st.Parent, Logger: s.log}); err != nil {
			return nil, err
		}
	} else if st.Parent != "" {
		// The sandbox's cgroup is where it was made, whatever parent the
		// caller's Manager has now (berth stop without --cgroup-parent).
		if cgm, err = cgm.WithParent(st.Parent); err != nil {
			return nil, fmt.Errorf("sandbox %s: %w", st.ID, err)
		}
	}
	if s.cg, err = cgm.Open(st.Cgroup); err != nil {
		return nil, fmt.Errorf("sandbox %s: %w", st.ID, err)
	}
	if _, err := os.Stat(filepath.Join(s.rootfs, ".")); err != nil {
		return nil, fmt.Errorf("sandbox %s: rootfs: %w", st.ID, err)
	}
	return s, nil
}

// supervisorLog returns the log the sandbox's supervisor keeps
// (State.Log), or "". A handle opened after Start but before Supervise
// took the sandbox over has a record that names no log yet: it reads the
// record again, once the sandbox's starter may have handed it over.
func (s *Sandbox) supervisorLog() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state.Log != "" || s.cmd != nil || s.id == "" {
		return s.state.Log
	}
	if st, err := readState(s.stateDir(), s.id); err == nil && st.Init == s.state.Init {
		s.state.Log = st.Log
	}
	return s.state.Log
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// pendingWait is how long Open waits for a starting sandbox's record to be
// completed; its start has returned a few hundred microseconds before.
const pendingWait = time.Second

// findState returns the record of the sandbox id names (a name, an ID or
// a unique prefix of one), once it is complete.
func findState(ctx context.Context, stateRoot, id string) (*State, error) {
	deadline := time.Now().Add(pendingWait)
	for {
		st, err := lookState(stateRoot, id)
		if err != nil {
			return nil, err
		}
		if st == nil {
			return nil, fmt.Errorf("sandbox %s: %w", clip.String(id), ErrNotFound)
		}
		// A sandbox waiting in a pool stays pending until it is used.
		if !st.Pending || time.Now().After(deadline) {
			return st, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}

// lookState returns the record id names, or nil: a name first, since a
// name may look like an ID prefix; then a whole ID; then a prefix. A name
// or a whole ID reads that one record, not every sandbox's.
func lookState(stateRoot, id string) (*State, error) {
	if named := lookupName(stateRoot, id); named != "" {
		// A pending record may not say the name yet (a pool's sandbox
		// is named when taken); findState waits for it to be complete.
		if st, err := ReadState(stateRoot, named); err == nil && (st.Name == id || st.Pending) {
			return st, nil
		}
	}
	if sandboxIDRE.MatchString(id) {
		if st, err := ReadState(stateRoot, id); err == nil {
			return st, nil
		}
	}
	states, err := ReadStates(stateRoot)
	if err != nil {
		return nil, err
	}
	return prefixState(states, id)
}

// prefixState returns the record of the one sandbox whose ID begins with
// prefix (at least 4 characters), or nil.
func prefixState(states []State, prefix string) (*State, error) {
	if len(prefix) < 4 {
		return nil, nil
	}
	var st *State
	for i := range states {
		if strings.HasPrefix(states[i].ID, prefix) {
			if st != nil {
				return nil, fmt.Errorf("sandbox %s: %w", clip.String(prefix), ErrAmbiguousID)
			}
			st = &states[i]
		}
	}
	return st, nil
}

// State returns the sandbox's record: for a handle from Open, what the
// sandbox's state directory said when it was opened, its name, labels
// and the log its supervisor keeps (State.Log, which ReadLog reads)
// among it.
func (s *Sandbox) State() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.state
	st.Labels = maps.Clone(st.Labels)
	st.Args = slices.Clone(st.Args)
	st.Command = slices.Clone(st.Command)
	st.Env = slices.Clone(st.Env)
	st.Volumes = slices.Clone(st.Volumes)
	return st
}
