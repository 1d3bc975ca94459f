package layerfs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-dev/berth/internal/atomicfile"
	"github.com/berth-dev/berth/internal/clip"
)

// A hold keeps layers that a rootfs made outside the store uses (a
// storage plugin's, stacked on the store's layer directories) from GC,
// as the store's own rootfs records keep theirs: without it, removing the
// image and collecting garbage would delete the files under a running
// sandbox. A hold is a file holds/<name> listing the layers' diff IDs,
// and lasts until Unhold, across restarts, like the rootfs it stands for.

// holdRE is the rule for hold names: a file name.
var holdRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$`)

type holdRecord struct {
	Layers []v1.Hash `json:"layers"` // diff IDs
}

// Hold keeps layers from GC under name until Unhold(name). A layer not in
// the store is an error wrapping ErrNotFound. Holding a name again
// replaces what it holds.
func (s *Store) Hold(ctx context.Context, name string, layers []Layer) error {
	if !holdRE.MatchString(name) {
		return fmt.Errorf("hold %s: the name must be 1-255 letters, digits, '.', '_' or '-'", clip.Quote(name))
	}
	l, err := s.use(ctx)
	if err != nil {
		return err
	}
	defer l.unlock()
	// GC cannot run while this holds the store: a layer present now stays
	// until the hold is gone.
	rec := holdRecord{Layers: []v1.Hash{}}
	for _, layer := range layers {
		if !exists(s.layerDir(layer.DiffID)) {
			return fmt.Errorf("hold %s: layer %s: %w", name, layer.DiffID, ErrNotFound)
		}
		rec.Layers = append(rec.Layers, layer.DiffID)
	}
	if err := os.MkdirAll(s.path("holds"), 0o700); err != nil {
		return fmt.Errorf("hold %s: %w", name, err)
	}
	b, _ := json.Marshal(rec)
	if err := writeFileAtomic(s.path("holds", name), b, true); err != nil {
		return fmt.Errorf("hold %s: %w", name, err)
	}
	return nil
}

// Unhold drops the hold under name; one that does not exist is no error.
func (s *Store) Unhold(ctx context.Context, name string) error {
	if !holdRE.MatchString(name) {
		return fmt.Errorf("unhold %s: %w", clip.Quote(name), ErrNotFound)
	}
	l, err := s.use(ctx)
	if err != nil {
		return err
	}
	defer l.unlock()
	if err := os.Remove(s.path("holds", name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("unhold %s: %w", name, err)
	}
	return nil
}

// heldLayers adds the layers the holds name to layers, for GC, which
// holds the store exclusively. It reports false if a hold could not be
// read, after which GC must keep every layer.
func (s *Store) heldLayers(layers map[v1.Hash]bool) bool {
	entries, err := os.ReadDir(s.path("holds"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return true
		}
		s.log.Warn("gc: holds unreadable; keeping every layer", "err", err)
		return false
	}
	ok := true
	for _, e := range entries {
		p := s.path("holds", e.Name())
		if atomicfile.IsTemp(e.Name()) {
			os.Remove(p) // a Hold cut short: no writer runs during GC
			continue
		}
		var rec holdRecord
		b, err := os.ReadFile(p)
		if err == nil {
			err = json.Unmarshal(b, &rec)
		}
		if err != nil {
			s.log.Warn("gc: a hold is unreadable; keeping every layer", "hold", e.Name(), "err", err)
			ok = false
			continue
		}
		for _, id := range rec.Layers {
			layers[id] = true
		}
	}
	return ok
}

// checkHolds marks the layers the holds name as used, as GC keeps them,
// and reports a hold that cannot be read or names a missing layer.
func (c *checker) checkHolds() error {
	dir := c.s.path("holds")
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		if atomicfile.IsTemp(e.Name()) {
			c.report(ProblemLeftover, p, "half-written hold")
			continue
		}
		var rec holdRecord
		b, err := os.ReadFile(p)
		if err == nil {
			err = json.Unmarshal(b, &rec)
		}
		if err != nil {
			c.report(ProblemBadRootfs, p, "unreadable hold: %v", err)
			continue
		}
		for _, id := range rec.Layers {
			c.layers[id] = true
			c.layerPresent(id, p)
		}
	}
	return nil
}
