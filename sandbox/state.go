package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/berth-dev/berth/layerfs"
	"github.com/berth-dev/berth/netplug"
	"github.com/berth-dev/berth/security"
)

// State is the record every sandbox keeps in its state directory while it
// exists. It names the process that owns the sandbox, so that Recover can
// tell a sandbox whose host died from one that is merely running.
type State struct {
	ID        string    `json:"id"`
	Image     string    `json:"image"`
	Args      []string  `json:"args"`
	Created   time.Time `json:"created"`
	Host      procID    `json:"host"`          // the process that started it
	Init      procID    `json:"init,omitzero"` // its PID 1, once started
	RootfsKey string    `json:"rootfsKey"`     // in Store
	Store     string    `json:"store"`         // root of the layerfs store, if it is one
	Cgroup    string    `json:"cgroup"`        // name under the cgroup parent
	Parent    string    `json:"cgroupParent"`  // the cgroup parent
	Hostname  string    `json:"hostname"`
	Volumes   []string  `json:"volumes,omitempty"` // names of the named volumes it binds

	// What Exec from another process needs to start processes the way
	// the sandbox's own were.
	ImageDigest string           `json:"imageDigest"`
	Rootfs      string           `json:"rootfs"` // host path, once prepared
	Env         []string         `json:"env,omitempty"`
	User        string           `json:"user,omitempty"`
	Dir         string           `json:"dir,omitempty"`
	Security    *security.Config `json:"security,omitempty"`

	// Pending means the record is not complete: the sandbox is starting,
	// or waits in a Pool for its workload. Its PID 1 and workload are
	// recorded just after Start returns, off the start's path.
	Pending bool `json:"pending,omitempty"`
}

// procID names a process for as long as it lives: a pid alone could be
// reused by an unrelated process after the first one dies.
type procID struct {
	PID       int    `json:"pid"`
	StartTime uint64 `json:"startTime"` // clock ticks after boot, /proc/<pid>/stat field 22
}

func procStartTime(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name, field 2, may hold spaces and parentheses; the
	// fields after it are counted from its closing parenthesis.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

var self = sync.OnceValue(func() procID {
	pid := os.Getpid()
	st, _ := procStartTime(pid)
	return procID{PID: pid, StartTime: st}
})

// alive reports whether the process p names still runs.
func (p procID) alive() bool {
	if p.PID <= 0 {
		return false
	}
	st, err := procStartTime(p.PID)
	return err == nil && st == p.StartTime
}

func writeState(dir string, st *State) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, ".state.json.tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, "state.json"))
}

// ReadStates returns the records of every sandbox under stateDir (empty
// means DefaultStateDir), running or left behind.
func ReadStates(stateDir string) ([]State, error) {
	if stateDir == "" {
		stateDir = DefaultStateDir
	}
	entries, err := os.ReadDir(stateDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []State
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(stateDir, e.Name(), "state.json"))
		if err != nil {
			continue // being created or removed
		}
		var st State
		if json.Unmarshal(b, &st) == nil && st.ID == e.Name() {
			out = append(out, st)
		}
	}
	return out, nil
}

// Alive reports whether the process that owns the sandbox still runs.
func (st *State) Alive() bool { return st.Host.alive() }

// RecoverResult says what Recover reclaimed.
type RecoverResult struct {
	Sandboxes []string // IDs of dead sandboxes whose leftovers were removed
	Rootfs    []string // store keys of sandbox rootfs no record names
	Cgroups   []string // cgroups no record names
}

// Recover finds sandboxes whose host process died (killed, crashed, or a
// machine that rebooted under the store) and frees what they held: their
// processes, cgroups, rootfs mounts and state. It leaves live sandboxes
// alone, so it is safe to run while other programs run sandboxes.
// opts supplies the storage, cgroup manager and state directory, as for
// New.
func Recover(ctx context.Context, opts *Options) (RecoverResult, error) {
	var res RecoverResult
	o := Options{}
	if opts != nil {
		o = *opts
	}
	stateDir := o.StateDir
	if stateDir == "" {
		stateDir = DefaultStateDir
	}
	cgm := o.Cgroups
	if cgm == nil {
		var err error
		if cgm, err = defaultCgroups(); err != nil {
			return res, err
		}
	}
	storage := o.Storage
	if storage == nil {
		st, err := defaultStore()
		if err != nil {
			return res, err
		}
		storage = st
	}

	nets := o.Networks
	if nets == nil {
		// Only a host where networks were ever used has netplug's state;
		// recovering must not create it.
		if _, err := os.Stat(netplug.DefaultRunDir); err == nil {
			if nets, err = netplug.Open(&netplug.Options{Logger: o.Logger}); err != nil {
				return res, err
			}
		}
	}

	states, err := ReadStates(stateDir)
	if err != nil {
		return res, err
	}
	live := map[string]bool{}
	var errs []error
	for _, st := range states {
		if st.Alive() {
			live[st.ID] = true
			continue
		}
		if err := ctx.Err(); err != nil {
			return res, err
		}
		// The cgroup first: killing what runs in it frees the rootfs.
		if cg, err := cgm.Open(st.Cgroup); err == nil {
			if err := cg.Remove(ctx); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		if nets != nil {
			if err := nets.DetachAll(ctx, st.ID); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		if err := storage.Release(ctx, st.RootfsKey); err != nil && !errors.Is(err, layerfs.ErrNotFound) {
			errs = append(errs, err)
			continue
		}
		if err := removeStateDir(filepath.Join(stateDir, st.ID)); err != nil {
			errs = append(errs, err)
			continue
		}
		res.Sandboxes = append(res.Sandboxes, st.ID)
	}

	// Leftovers with no record at all: from a crash before the record was
	// written, or after it was removed, or from before a reboot.
	hasRecord := func(id string) bool {
		if live[id] {
			return true
		}
		_, err := os.Stat(filepath.Join(stateDir, id))
		return err == nil
	}
	if lister, ok := storage.(interface {
		Rootfses(context.Context) ([]string, error)
	}); ok {
		keys, err := lister.Rootfses(ctx)
		if err != nil {
			errs = append(errs, err)
		}
		for _, key := range keys {
			id, ok := strings.CutPrefix(key, "sandbox-")
			if !ok || hasRecord(id) {
				continue
			}
			if err := storage.Release(ctx, key); err != nil {
				errs = append(errs, err)
				continue
			}
			res.Rootfs = append(res.Rootfs, key)
		}
	}
	names, err := cgm.List()
	if err != nil {
		errs = append(errs, err)
	}
	for _, name := range names {
		if hasRecord(name) {
			continue
		}
		cg, err := cgm.Open(name)
		if err == nil {
			err = cg.Remove(ctx)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		res.Cgroups = append(res.Cgroups, name)
	}
	// Attachments of sandboxes whose namespace is gone, whichever state
	// directory they were recorded in, and bridges nothing uses.
	if nets != nil {
		if err := nets.Prune(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	// An empty parent goes too; one still in use stays (EBUSY).
	if len(live) == 0 {
		if err := cgm.RemoveParent(); err != nil && !errors.Is(err, syscall.EBUSY) {
			o.logger().Debug("cgroup parent kept", "err", err)
		}
	}
	return res, errors.Join(errs...)
}
