package layerfs

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestVolumeNames(t *testing.T) {
	s := newStore(t, nil)
	ctx := context.Background()
	for _, name := range []string{"data", "a", "my-vol_1.2", strings.Repeat("v", MaxVolumeName)} {
		if _, err := s.CreateVolume(ctx, name); err != nil {
			t.Errorf("CreateVolume(%q): %v", name, err)
		}
	}
	for _, name := range []string{"", ".", "..", ".hidden", "-x", "a/b", "../escape", "a\x00b", "sp ace", strings.Repeat("v", MaxVolumeName+1), strings.Repeat("w", 5000)} {
		_, err := s.CreateVolume(ctx, name)
		if err == nil || !strings.Contains(err.Error(), "volume name") || len(err.Error()) > 200 {
			t.Errorf("CreateVolume(%.40q): %v, want a short error about the name", name, err)
		}
		if _, err := s.Volume(ctx, name); err == nil {
			t.Errorf("Volume(%.40q) accepted it", name)
		}
		if err := s.RemoveVolume(ctx, name); !errors.Is(err, ErrNotFound) {
			t.Errorf("RemoveVolume(%.40q): %v, want ErrNotFound", name, err)
		}
	}
	if _, err := os.Stat(filepath.Join(s.Root(), "escape")); err == nil {
		t.Error("a volume name reached outside volumes/")
	}
}

func TestVolumeLifecycle(t *testing.T) {
	s := newStore(t, nil)
	ctx := context.Background()
	if vols, err := s.Volumes(ctx); err != nil || len(vols) != 0 {
		t.Fatalf("Volumes of a new store: %v %v", vols, err)
	}
	dir, err := s.CreateVolume(ctx, "kept")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateVolume(ctx, "kept"); !errors.Is(err, ErrExists) {
		t.Errorf("creating it again: %v, want ErrExists", err)
	}
	// Volume, which sandboxes call, finds the same directory, and makes
	// others on first use.
	if d, err := s.Volume(ctx, "kept"); err != nil || d != dir {
		t.Errorf("Volume(kept) = %q %v, want %q", d, err, dir)
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	// A second link to the file is not counted twice.
	if err := os.Link(filepath.Join(dir, "f"), filepath.Join(dir, "g")); err != nil {
		t.Fatal(err)
	}
	used, err := s.Volume(ctx, "used")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(used, "f"), make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Volume(ctx, "spare"); err != nil {
		t.Fatal(err)
	}
	vols, err := s.Volumes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, v := range vols {
		names = append(names, v.Name)
		if v.Name == "kept" && (v.Size < 1<<20 || v.Size >= 2<<20) {
			t.Errorf("kept takes %d bytes, want 1 MiB and a directory", v.Size)
		}
	}
	if !slices.Equal(names, []string{"kept", "spare", "used"}) {
		t.Errorf("Volumes: %v", names)
	}

	users := func(name string) ([]string, error) {
		if name == "used" {
			return []string{"0123456789abcdef", "fedcba9876543210"}, nil
		}
		return nil, nil
	}
	err = s.RemoveUnusedVolume(ctx, "used", users)
	if !errors.Is(err, ErrVolumeInUse) || !strings.Contains(err.Error(), "0123456789abcdef") || !strings.Contains(err.Error(), "1 more") {
		t.Errorf("removing a volume in use: %v, want ErrVolumeInUse naming its user", err)
	}
	if _, err := os.Stat(filepath.Join(used, "f")); err != nil {
		t.Errorf("the volume in use lost its file: %v", err)
	}
	// A caller that cannot tell who uses a volume removes nothing.
	unsure := errors.New("a record is unreadable")
	res, err := s.PruneVolumes(ctx, func(string) ([]string, error) { return nil, unsure })
	if !errors.Is(err, unsure) || len(res.Removed) != 0 {
		t.Errorf("prune when users cannot tell: %+v %v", res, err)
	}

	res, err = s.PruneVolumes(ctx, users)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Removed, []string{"kept", "spare"}) || res.Bytes < 1<<20 {
		t.Errorf("prune: %+v, want kept and spare, 1 MiB or more", res)
	}
	if vols, err := s.Volumes(ctx); err != nil || len(vols) != 1 || vols[0].Name != "used" {
		t.Errorf("after prune: %+v %v", vols, err)
	}
	if err := s.RemoveUnusedVolume(ctx, "kept", users); !errors.Is(err, ErrNotFound) {
		t.Errorf("removing a removed volume: %v, want ErrNotFound", err)
	}
	if err := s.RemoveVolume(ctx, "used"); err != nil {
		t.Fatal(err)
	}
	// Nothing is left of them, staging included.
	for _, d := range []string{"volumes", "tmp"} {
		if ents, _ := os.ReadDir(filepath.Join(s.Root(), d)); len(ents) != 0 {
			t.Errorf("%s/ still holds %v", d, ents)
		}
	}
}

// TestVolumeUsageStaysInside checks that a volume's size counts what is
// in it, however deep, and nothing a symlink in it leads to.
func TestVolumeUsageStaysInside(t *testing.T) {
	s := newStore(t, nil)
	ctx := context.Background()
	dir, err := s.Volume(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "big"), make([]byte, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	deep := filepath.Join(dir, "a", "b", "c")
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(deep, "f"), make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "a", "out")); err != nil {
		t.Fatal(err)
	}
	vols, err := s.Volumes(ctx)
	if err != nil || len(vols) != 1 {
		t.Fatalf("Volumes: %v, %v", vols, err)
	}
	if size := vols[0].Size; size < 1<<20 || size >= 2<<20 {
		t.Errorf("v takes %d bytes, want 1 MiB and its directories, nothing behind the symlink", size)
	}
}
