package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/berth-dev/berth/layerfs"
)

// volumeNames are the named volumes among mounts, for the sandbox's
// record: VolumeUsers reads them there.
func volumeNames(mounts []Mount) []string {
	var names []string
	for _, m := range mounts {
		if m.Type == "volume" && !slices.Contains(names, m.Source) {
			names = append(names, m.Source)
		}
	}
	return names
}

// VolumeUsers returns what tells store's RemoveUnusedVolume and
// PruneVolumes which sandboxes, of those whose records are under stateDir
// ("" for DefaultStateDir), use a volume of the store: those whose record
// names the volume and whose owner or PID 1 still runs. A sandbox records
// its volumes before it binds them, and binds them under the store's
// volume lock, which removal holds while it asks.
//
// A record that cannot be read is an error: its sandbox might use any
// volume. (berth gc removes the records of sandboxes that are gone.) A
// directory without a record yet is a sandbox that has not yet bound
// anything.
func VolumeUsers(stateDir string, store *layerfs.Store) layerfs.VolumeUsers {
	if stateDir == "" {
		stateDir = DefaultStateDir
	}
	return func(name string) ([]string, error) {
		root, err := os.Stat(store.Root())
		if err != nil {
			return nil, err
		}
		_, entries, err := readStateDir(stateDir)
		if err != nil {
			return nil, fmt.Errorf("sandbox records: %w", err)
		}
		var users []string
		for _, e := range entries {
			if !e.IsDir() {
				continue
			}
			b, err := os.ReadFile(filepath.Join(stateDir, e.Name(), "state.json"))
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			var st State
			if err == nil {
				err = json.Unmarshal(b, &st)
			}
			if err != nil {
				return nil, fmt.Errorf("cannot tell whether sandbox %s uses it: its record: %w (berth gc reclaims a dead sandbox's)", e.Name(), err)
			}
			if !slices.Contains(st.Volumes, name) || !(st.Alive() || st.Init.alive()) {
				continue
			}
			if fi, err := os.Stat(st.Store); err != nil || !os.SameFile(fi, root) {
				continue // another store's volume of the same name
			}
			users = append(users, st.ID)
		}
		return users, nil
	}
}
