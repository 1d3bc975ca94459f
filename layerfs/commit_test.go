package layerfs

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
)

// writeDiff is a DiffFunc that writes b.
func writeDiff(b []byte) DiffFunc {
	return func(ctx context.Context, w io.Writer) error {
		_, err := w.Write(b)
		return err
	}
}

// commitBase imports a small image, "a" and "dir/b", into a new store.
func commitBase(t *testing.T, opts *Options) (*Store, *Image) {
	t.Helper()
	s := newStore(t, opts)
	layout := t.TempDir()
	writeLayout(t, layout, "base:1", true, buildTar(t,
		fileEntry("a", "a", 0o644), dirEntry("dir/", 0o755), fileEntry("dir/b", "b", 0o644)))
	img, err := s.Import(ctx, layout, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s, img
}

// A diff from elsewhere becomes a layer on the parent's, with its files
// added and its whiteouts deleting the parent's.
func TestCommitDiff(t *testing.T) {
	s, base := commitBase(t, nil)
	diff := buildTar(t, fileEntry("new", "made", 0o600), dirEntry("dir/", 0o755), fileEntry("dir/.wh.b", "", 0o644))
	// Only the parent's digest counts, not what the caller says it holds.
	parent := &Image{Digest: base.Digest}
	img, err := s.CommitDiff(ctx, parent, writeDiff(diff), &CommitOptions{Name: "base:committed", Comment: "from a plugin", Author: "me"})
	if err != nil {
		t.Fatal(err)
	}
	if len(img.Layers) != 2 || img.Layers[0] != base.Layers[0] || !slices.Equal(img.Names, []string{"base:committed"}) {
		t.Fatalf("committed image: layers %+v, names %v", img.Layers, img.Names)
	}
	if h := img.Config.History; len(h) == 0 || h[len(h)-1].Comment != "from a plugin" || img.Config.Author != "me" {
		t.Errorf("committed config: author %q, history %+v", img.Config.Author, h)
	}
	r := prepare(t, s, "committed", img)
	if b, err := os.ReadFile(filepath.Join(r.Path, "new")); err != nil || string(b) != "made" {
		t.Errorf("the committed file: %q, %v", b, err)
	}
	if _, err := os.Lstat(filepath.Join(r.Path, "dir", "b")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the whited-out file: %v, want it gone", err)
	}
	if _, err := os.Lstat(filepath.Join(r.Path, "a")); err != nil {
		t.Errorf("the parent's file: %v", err)
	}

	if _, err := s.CommitDiff(ctx, &Image{Digest: digestBytes([]byte("no such image"))}, writeDiff(diff), nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("commit on an unknown image: %v, want %v", err, ErrNotFound)
	}
	if _, err := s.CommitDiff(ctx, nil, writeDiff(diff), nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("commit on no image: %v, want %v", err, ErrNotFound)
	}
}

// The diff is untrusted, like an imported layer: one the unpacker refuses,
// one cut short and one that fails all fail the commit, and leave the store
// as it was, before GC and after. The diff has returned by the time
// CommitDiff does.
func TestCommitDiffRefused(t *testing.T) {
	errCut := errors.New("cut")
	valid := buildTar(t, fileEntry("f", strings.Repeat("x", 64<<10), 0o644))
	cases := []struct {
		name string
		diff []byte
		fail error // what the diff returns after writing
		want error
	}{
		{"../escape", buildTar(t, fileEntry("../escape", "x", 0o644)), nil, ErrUnsafeEntry},
		{"/etc/passwd", buildTar(t, fileEntry("/etc/passwd", "x", 0o644)), nil, ErrUnsafeEntry},
		{"symlink escape", buildTar(t, symlinkEntry("evil", "/etc"), fileEntry("evil/passwd", "x", 0o644)), nil, ErrUnsafeEntry},
		{"hard link out", buildTar(t, hardlinkEntry("shadow", "../../../../etc/shadow")), nil, ErrUnsafeEntry},
		{"fails midway", valid[:len(valid)/2], errCut, errCut},
		{"short", valid[:len(valid)/2], nil, io.ErrUnexpectedEOF},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, base := commitBase(t, nil)
			before := storeLeftovers(t, s)
			var returned atomic.Bool
			diff := func(ctx context.Context, w io.Writer) error {
				defer returned.Store(true)
				if _, err := w.Write(c.diff); err != nil {
					return err
				}
				if c.fail != nil || c.want != ErrUnsafeEntry {
					return c.fail
				}
				// A diff that goes on until stopped, and then
				// takes its time: the commit waits for it.
				for {
					if _, err := w.Write(make([]byte, 64<<10)); err != nil {
						<-ctx.Done()
						return err
					}
				}
			}
			img, err := s.CommitDiff(ctx, base, diff, &CommitOptions{Name: "evil:1"})
			if !errors.Is(err, c.want) {
				t.Fatalf("commit = %v, %v; want an error matching %v", img, err, c.want)
			}
			if !returned.Load() {
				t.Error("the diff was still running after CommitDiff returned")
			}
			if after := storeLeftovers(t, s); !slices.Equal(after, before) {
				t.Errorf("store holds %v after the refused commit, %v before", after, before)
			}
			if _, err := s.GC(ctx); err != nil {
				t.Fatal(err)
			}
			if after := storeLeftovers(t, s); !slices.Equal(after, before) {
				t.Errorf("after GC, store holds %v, %v before", after, before)
			}
			if _, err := os.Lstat(filepath.Join(filepath.Dir(s.Root()), "escape")); err == nil {
				t.Error("the diff wrote outside the store")
			}
		})
	}
}

var errUnbounded = errors.New("the import limit did not stop the diff")

// A diff is bounded as an import is, where a commit of the store's own
// rootfs is not (TestCommitLimits), and one that never ends stops there.
func TestCommitDiffLimits(t *testing.T) {
	s, base := commitBase(t, &Options{MaxImportSize: 1 << 20, MaxImportEntries: 1000})
	before := storeLeftovers(t, s)
	var many []entry
	for i := range 2000 {
		many = append(many, fileEntry(strings.Repeat("f", 1+i%100)+string(rune('a'+i/100)), "", 0o644))
	}
	if _, err := s.CommitDiff(ctx, base, writeDiff(buildTar(t, many...)), nil); !errors.Is(err, ErrImportTooLarge) {
		t.Errorf("commit of 2000 entries under a limit of 1000: %v, want %v", err, ErrImportTooLarge)
	}
	head := buildTar(t, fileEntry("f", "", 0o644))
	endless := func(ctx context.Context, w io.Writer) error {
		if _, err := w.Write(head); err != nil {
			return err
		}
		zeros := make([]byte, 64<<10)
		for range 1024 { // 64 MiB, far past the limit
			if _, err := w.Write(zeros); err != nil {
				return err
			}
		}
		return errUnbounded
	}
	if _, err := s.CommitDiff(ctx, base, endless, nil); !errors.Is(err, ErrImportTooLarge) {
		t.Errorf("commit of an endless diff: %v, want %v", err, ErrImportTooLarge)
	}
	if after := storeLeftovers(t, s); !slices.Equal(after, before) {
		t.Errorf("store holds %v after the refused commits, %v before", after, before)
	}
}
