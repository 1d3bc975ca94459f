package sandbox

import (
	"sync"

	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/layerfs"
)

// The store and the cgroup layout of sandboxes whose options name none are
// opened once and shared: both are safe for concurrent use, and opening
// them for every sandbox cost a dozen system calls and a read of
// mountinfo on each start. A failure is not kept, so the next sandbox
// tries again; a changed $BERTH_ROOT opens the store it names.
var defaults struct {
	mu      sync.Mutex
	store   *layerfs.Store
	cgroups *cgroup.Manager
}

func defaultStore() (*layerfs.Store, error) {
	root := layerfs.DefaultRoot()
	defaults.mu.Lock()
	defer defaults.mu.Unlock()
	if defaults.store == nil || defaults.store.Root() != root {
		st, err := layerfs.Open(root, nil)
		if err != nil {
			return nil, err
		}
		defaults.store = st
	}
	return defaults.store, nil
}

func defaultCgroups() (*cgroup.Manager, error) {
	defaults.mu.Lock()
	defer defaults.mu.Unlock()
	if defaults.cgroups == nil {
		m, err := cgroup.NewManager(cgroup.Options{})
		if err != nil {
			return nil, err
		}
		defaults.cgroups = m
	}
	return defaults.cgroups, nil
}
