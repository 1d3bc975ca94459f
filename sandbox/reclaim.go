package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/netplug"
)

// ErrOwned means a sandbox Reclaim was asked for still has an owner.
var ErrOwned = errors.New("sandbox still has an owner")

// Reclaim frees what the dead sandbox id (its full ID) of opts's state
// directory held, as Recover would, and nothing else. It is what the
// program a supervisor becomes at the end (SuperviseConfig.Then) calls:
// unlike Recover, it leaves alone leftovers that no record of this state
// directory names, which may be live sandboxes recorded in another one
// that shares the cgroup parent or the store, and it costs the same
// however many sandboxes there are. A sandbox whose owner still lives is
// not touched: the error wraps ErrOwned. One that is already gone is no
// error.
func Reclaim(ctx context.Context, id string, opts *Options) error {
	if !sandboxIDRE.MatchString(id) {
		return fmt.Errorf("reclaim %q: %w", id, ErrNotFound)
	}
	o, cgm, storage, nets, err := recoverySetup(opts)
	if err != nil {
		return err
	}
	stateDir := o.stateRoot()
	dir := filepath.Join(stateDir, id)
	if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	// As surveyStateDir does, under the root's exclusive lock: a start
	// between making its directory and locking it is never taken for
	// dead.
	root, err := lockRoot(stateDir, unix.LOCK_EX)
	if err != nil {
		return err
	}
	lock, err := lockAbandoned(dir)
	root.Close()
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil // reclaimed meanwhile
	case err != nil:
		return err
	case lock == nil:
		return fmt.Errorf("sandbox %s: %w", id, ErrOwned)
	}
	defer lock.Close()
	st, damage := readState(dir, id)
	if st != nil && st.Log == "" && st.Alive() {
		// A berth that took no owner lock: alive while its process is.
		return fmt.Errorf("sandbox %s: %w", id, ErrOwned)
	}
	backends := newRecoveryBackends(o.Backends, storage)
	defer backends.close()
	sdStorage, sdNetwork, err := backends.forSandbox(ctx, dir)
	if err != nil {
		return fmt.Errorf("sandbox %s: %w", id, err)
	}
	if err := reclaim(ctx, deadSandbox{id: id, state: st, damage: damage, lock: lock}, stateDir, cgm, sdStorage, nets, sdNetwork); err != nil {
		return fmt.Errorf("sandbox %s: %w", id, err)
	}
	if err := sweepNames(stateDir); err != nil {
		return fmt.Errorf("sandbox %s: names: %w", id, err)
	}
	return nil
}

// recoverySetup fills in what Recover and Reclaim need that opts leaves
// unset.
func recoverySetup(opts *Options) (o Options, cgm *cgroup.Manager, storage Storage, nets *netplug.Networks, err error) {
	if opts != nil {
		o = *opts
	}
	if cgm = o.Cgroups; cgm == nil {
		if cgm, err = defaultCgroups(); err != nil {
			return
		}
	}
	if storage = o.Storage; storage == nil {
		var st Storage
		if st, err = defaultStore(); err != nil {
			return
		}
		storage = st
	}
	if nets = o.Networks; nets == nil {
		// Only a host where networks were ever used has netplug's state;
		// recovering must not create it.
		if _, serr := os.Stat(netplug.DefaultRunDir); serr == nil {
			nets, err = netplug.Open(&netplug.Options{Logger: o.Logger})
		}
	}
	return
}
