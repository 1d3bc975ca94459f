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

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/internal/atomicfile"
	"github.com/berth-dev/berth/internal/clip"
	"github.com/berth-dev/berth/layerfs"
	"github.com/berth-dev/berth/netplug"
	"github.com/berth-dev/berth/security"
)

// State is the record every sandbox keeps in its state directory while it
// exists. It names the process that owns the sandbox; but what tells
// Recover that the owner lives is the lock the owner holds on the
// directory (ownerlock.go), which needs no record that a crash or a
// stray write may have damaged.
type State struct {
	ID        string            `json:"id"`
	Image     string            `json:"image"`
	Args      []string          `json:"args"`              // Options.Args
	Command   []string          `json:"command,omitempty"` // PID 1's: entrypoint, then Args or the image's Cmd
	Created   time.Time         `json:"created"`
	Host      procID            `json:"host"`          // the process that started it
	Init      procID            `json:"init,omitzero"` // its PID 1, once started
	RootfsKey string            `json:"rootfsKey"`     // in Store
	Store     string            `json:"store"`         // root of the layerfs store, if it is one
	Cgroup    string            `json:"cgroup"`        // name under the cgroup parent
	Parent    string            `json:"cgroupParent"`  // the cgroup parent
	Hostname  string            `json:"hostname"`
	Volumes   []string          `json:"volumes,omitempty"` // names of the named volumes it binds
	Name      string            `json:"name,omitempty"`    // Options.Name
	Labels    map[string]string `json:"labels,omitempty"`  // Options.Labels
	// Log is the file a supervisor keeps the workload's output in (see
	// Supervise and ReadLog), once the sandbox is supervised.
	Log string `json:"log,omitempty"`
	// Mounts and Resources are Options.Mounts and Options.Resources as
	// the caller gave them (the limits before the security preset's
	// defaults, which Security holds), for berth inspect and stats.
	Mounts    []Mount           `json:"mounts,omitempty"`
	Resources *cgroup.Resources `json:"resources,omitempty"`

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

// writeState replaces dir's record with st, atomically but without
// syncing it: a power cut ends the sandbox it describes, and Recover
// reclaims a sandbox by its ID whatever its record holds (the default
// state directory is a tmpfs, where the record goes with the sandbox).
func writeState(dir string, st *State) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return atomicfile.Replace(filepath.Join(dir, "state.json"), b, 0o600)
}

// ReadStates returns the records of every sandbox under stateDir (empty
// means DefaultStateDir), running or left behind.
func ReadStates(stateDir string) ([]State, error) {
	stateDir, entries, err := readStateDir(stateDir)
	if err != nil {
		return nil, err
	}
	var out []State
	for _, e := range entries {
		// A record that cannot be read is being created or removed, or
		// damaged: ReadRecords lists those.
		if st, err := readState(filepath.Join(stateDir, e.Name()), e.Name()); err == nil {
			out = append(out, *st)
		}
	}
	return out, nil
}

// readStateDir lists stateDir (empty means DefaultStateDir), which a host
// that never ran a sandbox does not have, and returns its path.
func readStateDir(stateDir string) (string, []os.DirEntry, error) {
	if stateDir == "" {
		stateDir = DefaultStateDir
	}
	entries, err := os.ReadDir(stateDir)
	if errors.Is(err, fs.ErrNotExist) {
		return stateDir, nil, nil
	}
	return stateDir, entries, err
}

// Alive reports whether the process that owns the sandbox still runs.
func (st *State) Alive() bool { return st.Host.alive() }

// Exited reports whether the sandbox's workload has ended while its owner
// still holds it: its PID 1 is gone, but its rootfs is kept until the
// owner closes it (Options.KeepRootfs), or is about to be released.
func (st *State) Exited() bool { return !st.Pending && st.Init.PID > 0 && !st.Init.alive() }

// ErrDamagedState means that a sandbox's state directory has no readable
// record: state.json is missing, empty, truncated or garbled.
var ErrDamagedState = errors.New("sandbox record missing or damaged")

// A Record is what a sandbox's state directory says of it, however little.
type Record struct {
	ID    string // the directory's name
	State *State // nil if the record cannot be read (then Err says why)
	Err   error  // wraps ErrDamagedState, and says what is wrong
	// Owned means that a live process owns the sandbox: it runs, or is
	// starting, or waits in a pool.
	Owned bool
}

// ReadRecords returns what the state directory of every sandbox under
// stateDir (empty means DefaultStateDir) says, records that cannot be
// read included, so that a damaged sandbox is listed rather than hidden.
func ReadRecords(stateDir string) ([]Record, error) {
	stateDir, entries, err := readStateDir(stateDir)
	if err != nil {
		return nil, err
	}
	var out []Record
	for _, e := range entries {
		if !e.IsDir() || !sandboxIDRE.MatchString(e.Name()) {
			continue
		}
		if r, ok := readRecord(stateDir, e.Name()); ok {
			out = append(out, r)
		}
	}
	return out, nil
}

// ReadRecord is ReadRecords for the one sandbox whose full ID is id: it
// reads that sandbox's state directory alone. The error wraps ErrNotFound
// if there is none.
func ReadRecord(stateDir, id string) (Record, error) {
	if stateDir == "" {
		stateDir = DefaultStateDir
	}
	if !sandboxIDRE.MatchString(id) {
		return Record{}, fmt.Errorf("sandbox %s: %w", clip.String(id), ErrNotFound)
	}
	r, ok := readRecord(stateDir, id)
	if !ok {
		return Record{}, fmt.Errorf("sandbox %s: %w", id, ErrNotFound)
	}
	return r, nil
}

// readRecord reads the state directory of sandbox id; false if there is
// none (or it was removed meanwhile).
func readRecord(stateDir, id string) (Record, bool) {
	dir := filepath.Join(stateDir, id)
	r := Record{ID: id}
	r.State, r.Err = readState(dir, id)
	// A shared lock tests for the owner's exclusive one without getting
	// in the way of other readers doing the same.
	lock, err := tryOwnerLock(dir, unix.LOCK_SH)
	if errors.Is(err, fs.ErrNotExist) {
		return r, false
	}
	if lock != nil {
		lock.Close()
	}
	// A lock that cannot be tested is no proof of death either.
	r.Owned = err != nil || lock == nil || (r.State != nil && r.State.Alive())
	return r, true
}

// ReadState returns the record of the sandbox whose full ID is id in
// stateDir ("" for DefaultStateDir), reading only its own: the error
// wraps ErrNotFound if it has none, ErrDamagedState if it cannot be read.
func ReadState(stateDir, id string) (*State, error) {
	if !sandboxIDRE.MatchString(id) {
		return nil, fmt.Errorf("sandbox %s: %w", clip.String(id), ErrNotFound)
	}
	if stateDir == "" {
		stateDir = DefaultStateDir
	}
	dir := filepath.Join(stateDir, id)
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("sandbox %s: %w", id, ErrNotFound)
	}
	st, err := readState(dir, id)
	if err != nil {
		return nil, fmt.Errorf("sandbox %s: %w", id, err)
	}
	return st, nil
}

// readState reads the record in the state directory dir of sandbox id.
// Its errors do not name the sandbox: their callers do.
func readState(dir, id string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: no state.json", ErrDamagedState)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDamagedState, err)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%w: state.json: %w", ErrDamagedState, err)
	}
	if st.ID != id {
		return nil, fmt.Errorf("%w: state.json names sandbox %.40q", ErrDamagedState, st.ID)
	}
	return &st, nil
}

// RecoverResult says what Recover reclaimed, and what it could not.
type RecoverResult struct {
	Sandboxes []string // IDs of dead sandboxes whose leftovers were removed
	Damaged   []string // those of them whose record was unreadable, reclaimed by ID alone
	Rootfs    []string // store keys of sandbox rootfs no record names
	Cgroups   []string // cgroups no record names
	Failed    []RecoverFailure
}

// A RecoverFailure is something Recover found dead but could not
// reclaim. The next Recover tries again.
type RecoverFailure struct {
	What string // "sandbox ID", "rootfs KEY", "cgroup NAME", "rootfs list", "cgroup list", "names" or "networks"
	Err  error
}

func (f RecoverFailure) Error() string { return f.What + ": " + f.Err.Error() }

// Recover finds sandboxes whose host process died (killed, crashed, or a
// machine that rebooted under the store) and frees what they held: their
// processes, cgroups, rootfs mounts, network attachments and state, all
// found from the sandbox's ID, the name of its state directory, so that
// a sandbox whose record is missing or damaged is reclaimed as well. Live sandboxes, which their owners keep locked
// (ownerlock.go), are left alone, so it is safe to run while other
// programs run sandboxes. What cannot be reclaimed is listed in
// RecoverResult.Failed, and joined in the error, and Recover carries on
// with the rest. opts supplies the storage, cgroup manager and state
// directory, as for New.
func Recover(ctx context.Context, opts *Options) (RecoverResult, error) {
	var res RecoverResult
	o, cgm, storage, nets, err := recoverySetup(opts)
	if err != nil {
		return res, err
	}
	stateDir := o.stateRoot()
	fail := func(what string, err error) {
		res.Failed = append(res.Failed, RecoverFailure{What: what, Err: err})
	}

	live, dead, err := surveyStateDir(stateDir)
	if err != nil {
		return res, err
	}
	backends := newRecoveryBackends(o.Backends, storage)
	defer backends.close()
	for _, d := range dead {
		if err := ctx.Err(); err != nil {
			for _, d := range dead {
				d.lock.Close()
			}
			return res, err
		}
		// A sandbox whose plugin cannot be opened is kept whole, for a
		// later Recover that can.
		sdStorage, sdNetwork, err := backends.forSandbox(ctx, filepath.Join(stateDir, d.id))
		if err == nil {
			err = reclaim(ctx, d, stateDir, cgm, sdStorage, nets, sdNetwork)
		}
		d.lock.Close()
		if err != nil {
			o.logger().Info("recover: cannot reclaim a dead sandbox", "id", d.id, "err", err)
			fail("sandbox "+d.id, err)
			continue
		}
		if d.state == nil {
			o.logger().Info("recover: reclaimed a sandbox whose record was damaged", "id", d.id, "err", d.damage)
			res.Damaged = append(res.Damaged, d.id)
		}
		res.Sandboxes = append(res.Sandboxes, d.id)
	}

	// Names of sandboxes that are gone, whether reclaimed just now or
	// long ago.
	if err := sweepNames(stateDir); err != nil {
		fail("names", err)
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
	// Only the options' storage, and not if it is a plugin: a plugin's
	// state is the host's, shared by every state directory, and a key
	// with no record here may be a live sandbox's recorded in another.
	// (Its sandboxes record it before it prepares anything, so it holds
	// no rootfs that no record names.)
	_, plugin := storage.(Locatable)
	if lister, ok := storage.(interface {
		Rootfses(context.Context) ([]string, error)
	}); ok && !plugin {
		keys, err := lister.Rootfses(ctx)
		if err != nil {
			fail("rootfs list", err)
		}
		for _, key := range keys {
			id, ok := strings.CutPrefix(key, "sandbox-")
			if !ok || hasRecord(id) {
				continue
			}
			if err := storage.Release(ctx, key); err != nil {
				fail("rootfs "+key, err)
				continue
			}
			res.Rootfs = append(res.Rootfs, key)
		}
	}
	names, err := cgm.List()
	if err != nil {
		fail("cgroup list", err)
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
			fail("cgroup "+name, err)
			continue
		}
		res.Cgroups = append(res.Cgroups, name)
	}
	// Attachments of sandboxes whose namespace is gone, whichever state
	// directory they were recorded in, and bridges nothing uses.
	if nets != nil {
		if err := nets.Prune(ctx); err != nil {
			fail("networks", err)
		}
	}
	// An empty parent goes too; one still in use stays (EBUSY).
	if len(live) == 0 {
		if err := cgm.RemoveParent(); err != nil && !errors.Is(err, syscall.EBUSY) {
			o.logger().Debug("cgroup parent kept", "err", err)
		}
	}
	errs := make([]error, len(res.Failed))
	for i, f := range res.Failed {
		errs[i] = f
	}
	return res, errors.Join(errs...)
}

// A deadSandbox is a state directory whose owner is gone.
type deadSandbox struct {
	id     string
	state  *State // nil if unreadable
	damage error  // why state is nil
	lock   *os.File
}

// surveyStateDir sorts the sandboxes under stateDir into the live and the
// dead, whose owner locks it takes (so that a concurrent Recover leaves
// them to this one). It holds off new sandboxes' starts meanwhile, so
// that none is caught between making its directory and locking it.
func surveyStateDir(stateDir string) (live map[string]bool, dead []deadSandbox, err error) {
	live = map[string]bool{}
	if _, err := os.Stat(stateDir); errors.Is(err, fs.ErrNotExist) {
		return live, nil, nil
	}
	root, err := lockRoot(stateDir, unix.LOCK_EX)
	if err != nil {
		return nil, nil, err
	}
	defer root.Close()
	entries, err := os.ReadDir(stateDir)
	if err != nil {
		return nil, nil, err
	}
	for _, e := range entries {
		if !e.IsDir() || !sandboxIDRE.MatchString(e.Name()) {
			continue
		}
		dir := filepath.Join(stateDir, e.Name())
		lock, err := lockAbandoned(dir)
		if err != nil || lock == nil {
			// Locked by its owner; or unreadable, which is no proof of
			// death.
			live[e.Name()] = true
			continue
		}
		st, damage := readState(dir, e.Name())
		// Sandboxes of a berth that took no owner lock are alive as
		// long as the process their record names. A supervised one's
		// (Log set) is a berth that takes it, and the program its
		// supervisor becomes at the end has the supervisor's PID and
		// start time, and reclaims the sandbox itself: the lock alone
		// counts.
		if st != nil && st.Log == "" && st.Alive() {
			lock.Close()
			live[e.Name()] = true
			continue
		}
		dead = append(dead, deadSandbox{id: e.Name(), state: st, damage: damage, lock: lock})
	}
	return live, dead, nil
}

// reclaim frees what the dead sandbox d held. Its cgroup, rootfs and
// network attachments are named after its ID (see build), which is the
// name of its state directory: the record is not needed to find them, and
// is not trusted to, since a damaged record that still parsed could name
// another sandbox's. The state directory goes last, only once everything
// else has, so that what is left can be tried again. plug is the
// Locatable network the sandbox recorded, if any.
func reclaim(ctx context.Context, d deadSandbox, stateDir string, cgm *cgroup.Manager, storage Storage, nets *netplug.Networks, plug Network) error {
	cgName, rootfsKey := d.id, "sandbox-"+d.id
	// The cgroup first: killing what runs in it frees the rootfs. It is
	// looked for under the caller's parent and under the one its record
	// names (a --cgroup-parent of its own): the name is the ID either way.
	cgms := []*cgroup.Manager{cgm}
	if d.state != nil && d.state.Parent != "" && d.state.Parent != cgm.Parent() {
		if own, err := cgm.WithParent(d.state.Parent); err == nil {
			cgms = append(cgms, own)
		}
	}
	for _, cgm := range cgms {
		if cg, err := cgm.Open(cgName); err == nil {
			if err := cg.Remove(ctx); err != nil {
				return err
			}
		} else if !errors.Is(err, cgroup.ErrNotFound) {
			return err
		}
	}
	// A parent of its own goes too once empty, if berth made it; one
	// still in use stays.
	for _, own := range cgms[1:] {
		own.RemoveParent()
	}
	var errs []error
	if nets != nil {
		if err := nets.DetachAll(ctx, d.id); err != nil {
			errs = append(errs, err)
		}
	}
	// By ID alone: the namespace went with the sandbox.
	if plug != nil {
		if err := detachRecorded(ctx, plug, d.id); err != nil {
			errs = append(errs, err)
		}
	}
	if err := storage.Release(ctx, rootfsKey); err != nil && !errors.Is(err, layerfs.ErrNotFound) {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return removeStateDir(filepath.Join(stateDir, d.id))
}
