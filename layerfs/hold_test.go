package layerfs

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// A held layer outlives its image through GC until the hold goes; an
// unreadable hold keeps every layer; a missing layer cannot be held.
func TestHoldKeepsLayersFromGC(t *testing.T) {
	s, img := quotaStore(t, "", "")
	if err := s.Hold(ctx, "plugin-x.sandbox-1", img.Layers); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(ctx, img.Digest.String()); err != nil {
		t.Fatal(err)
	}
	res, err := s.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Layers != 0 {
		t.Errorf("gc removed %d held layers", res.Layers)
	}
	for _, l := range img.Layers {
		if _, err := os.Stat(s.LayerDir(l.DiffID)); err != nil {
			t.Errorf("held layer: %v", err)
		}
	}

	write(t, s.path("holds", "garbled"), "{")
	if res, err := s.GC(ctx); err != nil || res.Layers != 0 {
		t.Errorf("gc with an unreadable hold: %+v, %v; want no layer removed", res, err)
	}
	if err := s.Unhold(ctx, "garbled"); err != nil {
		t.Fatal(err)
	}
	if err := s.Unhold(ctx, "plugin-x.sandbox-1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Unhold(ctx, "plugin-x.sandbox-1"); err != nil {
		t.Errorf("second Unhold: %v", err)
	}
	if res, err := s.GC(ctx); err != nil || res.Layers != len(img.Layers) {
		t.Errorf("gc after unhold: %+v, %v; want %d layers removed", res, err, len(img.Layers))
	}
	if err := s.Hold(ctx, "again", img.Layers); !errors.Is(err, ErrNotFound) {
		t.Errorf("Hold of removed layers: %v, want ErrNotFound", err)
	}
	for _, name := range []string{"", "../x", "a/b", ".x"} {
		if err := s.Hold(ctx, name, nil); err == nil {
			t.Errorf("Hold named %q: no error", name)
		}
	}
}

// Check counts held layers as used, as GC does.
func TestCheckHeldLayers(t *testing.T) {
	s, img := quotaStore(t, "", "")
	if err := s.Hold(ctx, "h", img.Layers); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(ctx, img.Digest.String()); err != nil {
		t.Fatal(err)
	}
	problems, err := s.Check(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if p.Kind == ProblemOrphan && strings.Contains(p.Path, "layers") {
			t.Errorf("a held layer is reported: %v", p)
		}
	}
}
