package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/berth-dev/berth/internal/atomicfile"
	"github.com/berth-dev/berth/netplug"
)

// A Locatable backend (Storage or Network) lives outside berth's
// process, as a plugin does, and can say how to reach it again. A sandbox
// records its backends' locators before it prepares or attaches anything,
// so that Recover, in another process, can reopen them through
// Options.Backends to undo what a dead sandbox left there.
type Locatable interface {
	// Locator is what Options.Backends needs to reopen the backend; it
	// is opaque to this package. For berth's plugins it is the absolute
	// path of the plugin's binary.
	Locator() string
}

// Backends reopens, for Recover, the Locatable backends that dead
// sandboxes recorded. What it returns is closed, if it is an io.Closer,
// when Recover is done with it.
type Backends interface {
	OpenStorage(ctx context.Context, locator string) (Storage, error)
	OpenNetwork(ctx context.Context, locator string) (Network, error)
}

// backendRecord names a sandbox's Locatable backends. It is a file of its
// own, beside state.json, so that the built-in backends' sandboxes, which
// have none, are reclaimed as they always were, and a damaged state.json
// does not lose which plugin holds the rootfs.
type backendRecord struct {
	Storage string `json:"storage,omitempty"`
	Network string `json:"network,omitempty"`
}

const backendsFile = "backends.json"

func locator(backend any) string {
	if l, ok := backend.(Locatable); ok {
		return l.Locator()
	}
	return ""
}

// recordBackends writes which Locatable backends the sandbox in stateDir
// uses, if any, before it uses them. The record is synced: a plugin's
// rootfses and attachments may outlive a reboot that a state directory on
// disk also outlives.
func recordBackends(stateDir string, storage Storage, network Network) error {
	r := backendRecord{Storage: locator(storage)}
	if network != nil {
		r.Network = locator(network)
	}
	if r == (backendRecord{}) {
		return nil
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(stateDir, backendsFile), b, 0o600)
}

// readBackends reads the record recordBackends wrote in dir; none means
// the built-in backends. A record that cannot be read wraps
// ErrDamagedState.
func readBackends(dir string) (backendRecord, error) {
	var r backendRecord
	b, err := os.ReadFile(filepath.Join(dir, backendsFile))
	if errors.Is(err, fs.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return r, fmt.Errorf("%w: %w", ErrDamagedState, err)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("%w: %s: %w", ErrDamagedState, backendsFile, err)
	}
	return r, nil
}

// detachRecorded detaches dead sandbox id from the Locatable network it
// recorded, by ID alone: its namespace went with it. The record is
// written before Attach, so the sandbox may have died before it was
// attached: a network that can list what it attached (as plugin.Network
// can) is asked first, so that an ID it never had is not an error
// however the network words its not-found.
func detachRecorded(ctx context.Context, n Network, id string) error {
	if l, ok := n.(interface {
		Attached(context.Context) ([]string, error)
	}); ok {
		if ids, err := l.Attached(ctx); err == nil && !slices.Contains(ids, id) {
			return nil
		}
	}
	if err := n.Detach(ctx, id, ""); err != nil && !errors.Is(err, netplug.ErrNotFound) {
		return err
	}
	return nil
}

// recoveryBackends are the backends one Recover reclaims with: the
// options' own, and the Locatable ones dead sandboxes recorded, each
// opened once, on first need.
type recoveryBackends struct {
	opener   Backends
	storage  Storage // the options' (or the default store)
	storages map[string]Storage
	networks map[string]Network
}

func newRecoveryBackends(opener Backends, storage Storage) *recoveryBackends {
	return &recoveryBackends{opener: opener, storage: storage, storages: map[string]Storage{}, networks: map[string]Network{}}
}

// forSandbox returns the storage that holds the rootfs of the dead
// sandbox in dir, and the Locatable network it was attached by (nil for
// netplug's, which Recover reclaims by ID). A backend that cannot be
// opened is an error: the sandbox must then be kept for a later Recover,
// since reclaiming it without would leave what the backend holds behind
// for good.
func (b *recoveryBackends) forSandbox(ctx context.Context, dir string) (Storage, Network, error) {
	r, err := readBackends(dir)
	if err != nil {
		return nil, nil, err
	}
	storage := b.storage
	if r.Storage != "" && r.Storage != locator(b.storage) {
		if storage = b.storages[r.Storage]; storage == nil {
			if b.opener == nil {
				return nil, nil, fmt.Errorf("storage %s: no Options.Backends to open it", r.Storage)
			}
			if storage, err = b.opener.OpenStorage(ctx, r.Storage); err != nil {
				return nil, nil, fmt.Errorf("storage %s: %w", r.Storage, err)
			}
			b.storages[r.Storage] = storage
		}
	}
	var network Network
	if r.Network != "" {
		if network = b.networks[r.Network]; network == nil {
			if b.opener == nil {
				return nil, nil, fmt.Errorf("network %s: no Options.Backends to open it", r.Network)
			}
			if network, err = b.opener.OpenNetwork(ctx, r.Network); err != nil {
				return nil, nil, fmt.Errorf("network %s: %w", r.Network, err)
			}
			b.networks[r.Network] = network
		}
	}
	return storage, network, nil
}

// close closes the backends it opened.
func (b *recoveryBackends) close() {
	for _, s := range b.storages {
		if c, ok := s.(io.Closer); ok {
			c.Close()
		}
	}
	for _, n := range b.networks {
		if c, ok := n.(io.Closer); ok {
			c.Close()
		}
	}
}
