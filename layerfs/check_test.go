package layerfs

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"
)

// TestCheck damages a store holding a real image in one way at a time
// and requires Check to report that damage, and nothing on the intact
// store.
func TestCheck(t *testing.T) {
	ctx := context.Background()
	for i, tc := range []struct {
		name   string
		damage func(t *testing.T, s *Store, img *Image)
		kind   ProblemKind
		path   func(s *Store, img *Image) string // where the problem is
	}{{
		name:   "flipped byte in layer blob",
		damage: func(t *testing.T, s *Store, img *Image) { flipByte(t, s.blobPath(img.Layers[0].Digest)) },
		kind:   ProblemCorruptBlob,
		path:   func(s *Store, img *Image) string { return s.blobPath(img.Layers[0].Digest) },
	}, {
		name:   "flipped byte in config blob",
		damage: func(t *testing.T, s *Store, img *Image) { flipByte(t, s.blobPath(img.ConfigDigest)) },
		kind:   ProblemCorruptBlob,
		path:   func(s *Store, img *Image) string { return s.blobPath(img.ConfigDigest) },
	}, {
		name:   "blob replaced by a symlink to itself elsewhere",
		damage: symlinkBlob,
		kind:   ProblemCorruptBlob,
		path:   func(s *Store, img *Image) string { return s.blobPath(img.Layers[0].Digest) },
	}, {
		name:   "deleted layer blob",
		damage: func(t *testing.T, s *Store, img *Image) { mustRemove(t, s.blobPath(img.Layers[0].Digest)) },
		kind:   ProblemMissingBlob,
		path:   func(s *Store, img *Image) string { return s.imagePath(img.Digest) },
	}, {
		name:   "deleted manifest blob",
		damage: func(t *testing.T, s *Store, img *Image) { mustRemove(t, s.blobPath(img.Digest)) },
		kind:   ProblemMissingBlob,
		path:   func(s *Store, img *Image) string { return s.imagePath(img.Digest) },
	}, {
		name: "deleted layer directory",
		damage: func(t *testing.T, s *Store, img *Image) {
			mustRemove(t, filepath.Dir(s.layerDir(img.Layers[0].DiffID)))
		},
		kind: ProblemMissingLayer,
		path: func(s *Store, img *Image) string { return s.imagePath(img.Digest) },
	}, {
		name:   "layer directory without diff",
		damage: func(t *testing.T, s *Store, img *Image) { mustRemove(t, s.layerDir(img.Layers[0].DiffID)) },
		kind:   ProblemBadLayer,
		path:   func(s *Store, img *Image) string { return filepath.Dir(s.layerDir(img.Layers[0].DiffID)) },
	}, {
		name:   "config with the wrong diff ID",
		damage: wrongDiffID,
		kind:   ProblemDiffID,
		path:   func(s *Store, img *Image) string { return s.blobPath(img.Layers[0].Digest) },
	}, {
		name: "orphan blob",
		damage: func(t *testing.T, s *Store, img *Image) {
			mustWrite(t, s.blobPath(sha256Hash([]byte("nobody's"))), "nobody's")
		},
		kind: ProblemOrphan,
		path: func(s *Store, img *Image) string { return s.blobPath(sha256Hash([]byte("nobody's"))) },
	}, {
		name: "orphan layer",
		damage: func(t *testing.T, s *Store, img *Image) {
			if err := os.MkdirAll(s.layerDir(sha256Hash([]byte("nobody's"))), 0o755); err != nil {
				t.Fatal(err)
			}
		},
		kind: ProblemOrphan,
		path: func(s *Store, img *Image) string { return filepath.Dir(s.layerDir(sha256Hash([]byte("nobody's")))) },
	}, {
		name: "image record removed under its name",
		damage: func(t *testing.T, s *Store, img *Image) {
			mustRemove(t, s.imagePath(img.Digest))
		},
		kind: ProblemDanglingRef,
		path: func(s *Store, img *Image) string { return s.refPath("check:test") },
	}, {
		name:   "garbled name",
		damage: func(t *testing.T, s *Store, img *Image) { mustWrite(t, s.refPath("check:test"), "\x00garbage") },
		kind:   ProblemDanglingRef,
		path:   func(s *Store, img *Image) string { return s.refPath("check:test") },
	}, {
		name:   "garbled image record",
		damage: func(t *testing.T, s *Store, img *Image) { mustWrite(t, s.imagePath(img.Digest), "{") },
		kind:   ProblemBadImage,
		path:   func(s *Store, img *Image) string { return s.imagePath(img.Digest) },
	}, {
		name: "staging directory left behind",
		damage: func(t *testing.T, s *Store, img *Image) {
			if err := os.MkdirAll(s.path("tmp", "stage-123", "layer"), 0o700); err != nil {
				t.Fatal(err)
			}
		},
		kind: ProblemLeftover,
		path: func(s *Store, img *Image) string { return s.path("tmp", "stage-123") },
	}, {
		name:   "temporary file of a record",
		damage: func(t *testing.T, s *Store, img *Image) { mustWrite(t, s.path("refs", ".tmp-x-1"), "") },
		kind:   ProblemLeftover,
		path:   func(s *Store, img *Image) string { return s.path("refs", ".tmp-x-1") },
	}, {
		// Each of these directories names its entries by a digest.
		name:   "blob not named by a digest",
		damage: func(t *testing.T, s *Store, img *Image) { mustWrite(t, s.path("blobs", "sha256", "stray"), "") },
		kind:   ProblemLeftover,
		path:   func(s *Store, img *Image) string { return s.path("blobs", "sha256", "stray") },
	}, {
		name:   "image record not named by a digest",
		damage: func(t *testing.T, s *Store, img *Image) { mustWrite(t, s.path("images", "stray"), "{}") },
		kind:   ProblemLeftover,
		path:   func(s *Store, img *Image) string { return s.path("images", "stray") },
	}, {
		name:   "layer not named by a diff ID",
		damage: func(t *testing.T, s *Store, img *Image) { mustMkdir(t, s.path("layers", "stray", "diff")) },
		kind:   ProblemLeftover,
		path:   func(s *Store, img *Image) string { return s.path("layers", "stray") },
	}, {
		name: "rootfs without a record",
		damage: func(t *testing.T, s *Store, img *Image) {
			if err := os.MkdirAll(s.path("rootfs", "stray", "state"), 0o700); err != nil {
				t.Fatal(err)
			}
		},
		kind: ProblemBadRootfs,
		path: func(s *Store, img *Image) string { return s.path("rootfs", "stray") },
	}, {
		name: "rootfs with an empty record",
		damage: func(t *testing.T, s *Store, img *Image) {
			mustMkdir(t, s.path("rootfs", "stray"))
			mustWrite(t, s.path("rootfs", "stray", "rootfs.json"), "")
		},
		kind: ProblemBadRootfs,
		path: func(s *Store, img *Image) string { return s.path("rootfs", "stray") },
	}, {
		name: "rootfs whose layer is gone",
		damage: func(t *testing.T, s *Store, img *Image) {
			mustMkdir(t, s.path("rootfs", "stray"))
			b, _ := json.Marshal(rootfsRecord{Image: img.Digest, Layers: []v1.Hash{sha256Hash([]byte("gone"))}, Driver: "copy"})
			mustWrite(t, s.path("rootfs", "stray", "rootfs.json"), string(b))
		},
		kind: ProblemMissingLayer,
		path: func(s *Store, img *Image) string { return s.path("rootfs", "stray") },
	}} {
		if shortCases(t, i) {
			break
		}
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t, nil)
			img, err := s.Import(ctx, sharedImage(t, alpineTar), &ImportOptions{Name: "check:test"})
			if err != nil {
				t.Fatal(err)
			}
			if problems, err := s.Check(ctx, nil); err != nil || len(problems) != 0 {
				t.Fatalf("intact store: Check = %v, %v; want no problems", problems, err)
			}
			tc.damage(t, s, img)
			problems, err := s.Check(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			want := tc.path(s, img)
			for _, p := range problems {
				if p.Kind == tc.kind && p.Path == want {
					t.Logf("reported: %s", p)
					return
				}
			}
			t.Errorf("Check did not report a %s at %s; it reported %d problems:\n%s", tc.kind, want, len(problems), problemList(problems))
		})
	}
}

// TestCheckAfterGC requires GC to leave nothing that Check calls an
// orphan or a leftover, so that a clean check after gc means a sound store.
func TestCheckAfterGC(t *testing.T) {
	ctx := context.Background()
	s := newStore(t, nil)
	img, err := s.Import(ctx, sharedImage(t, alpineTar), &ImportOptions{Name: "check:test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(ctx, "check:test"); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(s.path("tmp", "stage-123"), 0o700); err != nil {
		t.Fatal(err)
	}
	problems, err := s.Check(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !hasProblem(problems, ProblemOrphan, s.blobPath(img.Digest)) || !hasProblem(problems, ProblemLeftover, s.path("tmp", "stage-123")) {
		t.Fatalf("before GC, Check did not report the removed image's blobs and the staging directory:\n%s", problemList(problems))
	}
	if _, err := s.GC(ctx); err != nil {
		t.Fatal(err)
	}
	if problems, err := s.Check(ctx, nil); err != nil || len(problems) != 0 {
		t.Fatalf("after GC: Check = %v\n%s", err, problemList(problems))
	}
}

func hasProblem(problems []Problem, kind ProblemKind, path string) bool {
	for _, p := range problems {
		if p.Kind == kind && p.Path == path {
			return true
		}
	}
	return false
}

func problemList(problems []Problem) string {
	var b strings.Builder
	for _, p := range problems {
		b.WriteString("\t" + p.String() + "\n")
	}
	return b.String()
}

func flipByte(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x01
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// symlinkBlob moves a layer blob out of the store and leaves a symlink
// to it: the content is right, but a store that followed links could be
// made to read any file.
func symlinkBlob(t *testing.T, s *Store, img *Image) {
	p := s.blobPath(img.Layers[0].Digest)
	elsewhere := filepath.Join(t.TempDir(), "blob")
	if err := os.Rename(p, elsewhere); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(elsewhere, p); err != nil {
		t.Fatal(err)
	}
}

// wrongDiffID records a second image, whose blobs are all intact, whose
// config gives its layer a diff ID the layer does not decompress to.
func wrongDiffID(t *testing.T, s *Store, img *Image) {
	cfg := img.Config.DeepCopy()
	cfg.RootFS.DiffIDs[0] = sha256Hash([]byte("not the layer"))
	cb, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	id, err := s.writeManifest(cb, img.Manifest.Layers, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.addImage(id, []string{"check:wrong"}); err != nil {
		t.Fatal(err)
	}
	// The layer directory the wrong diff ID names, so that only the
	// mismatch is wrong.
	if err := os.MkdirAll(s.layerDir(cfg.RootFS.DiffIDs[0]), 0o755); err != nil {
		t.Fatal(err)
	}
}

func mustRemove(t *testing.T, path string) {
	t.Helper()
	if err := os.RemoveAll(path); err != nil {
		t.Fatal(err)
	}
}

func mustWrite(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func mustMkdir(t *testing.T, path string) {
	t.Helper()
	if err := os.MkdirAll(path, 0o700); err != nil {
		t.Fatal(err)
	}
}

// TestCheckLayers changes the files of a real image's unpacked layer in
// one way at a time and requires Check with Layers to name the file, and
// nothing on the intact store.
func TestCheckLayers(t *testing.T) {
	ctx := context.Background()
	for i, tc := range []struct {
		name   string
		file   string // in the layer
		change func(path string) error
	}{
		{"content, same size", "etc/alpine-release", func(p string) error {
			b, err := os.ReadFile(p)
			if err == nil {
				b[0] ^= 1
				err = os.WriteFile(p, b, 0)
			}
			return err
		}},
		{"content, longer", "etc/hostname", func(p string) error {
			f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
			if err == nil {
				_, err = f.WriteString("x")
				f.Close()
			}
			return err
		}},
		{"permissions", "bin/busybox", func(p string) error { return unix.Chmod(p, 0o4755) }},
		{"owner", "etc/hostname", func(p string) error { return os.Lchown(p, 1000, 1000) }},
		{"link target", "bin/sh", func(p string) error {
			if err := os.Remove(p); err != nil {
				return err
			}
			return os.Symlink("/tmp/sh", p)
		}},
		{"deleted", "etc/hostname", os.Remove},
		{"added", "etc/added", func(p string) error { return os.WriteFile(p, nil, 0o644) }},
		{"extended attribute", "etc/hostname", func(p string) error { return unix.Lsetxattr(p, "user.added", []byte("1"), 0) }},
	} {
		if shortCases(t, i) {
			break
		}
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t, nil)
			img, err := s.Import(ctx, sharedImage(t, alpineTar), nil)
			if err != nil {
				t.Fatal(err)
			}
			if problems, err := s.Check(ctx, &CheckOptions{Layers: true}); err != nil || len(problems) != 0 {
				t.Fatalf("intact store: Check = %v\n%s", err, problemList(problems))
			}
			layer := s.layerDir(img.Layers[0].DiffID)
			if err := tc.change(filepath.Join(layer, tc.file)); err != nil {
				t.Fatal(err)
			}
			problems, err := s.Check(ctx, &CheckOptions{Layers: true})
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range problems {
				if p.Kind == ProblemLayerContent && p.Path == filepath.Dir(layer) && strings.Contains(p.Detail, "/"+tc.file+": ") {
					t.Logf("reported: %s", p)
					return
				}
			}
			t.Errorf("Check did not report the change to /%s:\n%s", tc.file, problemList(problems))
		})
	}
}

// TestCheckLayersWhiteouts requires Check with Layers to find nothing
// wrong with a sound layer of deletions: whiteouts and opaque directories
// unpack the same every time.
func TestCheckLayersWhiteouts(t *testing.T) {
	ctx := context.Background()
	s := newStore(t, nil)
	img, err := s.Import(ctx, sharedImage(t, alpineTar), nil)
	if err != nil {
		t.Fatal(err)
	}
	r := prepare(t, s, "whiteouts", img)
	if err := os.Remove(filepath.Join(r.Path, "etc/hostname")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(r.Path, "etc/apk")); err != nil {
		t.Fatal(err)
	}
	mustMkdir(t, filepath.Join(r.Path, "etc/apk"))
	mustWrite(t, filepath.Join(r.Path, "etc/apk/new"), "new")
	top, err := s.Commit(ctx, "whiteouts", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(top.Layers) != 2 {
		t.Fatalf("the commit has %d layers, want 2", len(top.Layers))
	}
	problems, err := s.Check(ctx, &CheckOptions{Layers: true})
	if err != nil || len(problems) != 0 {
		t.Fatalf("Check = %v\n%s", err, problemList(problems))
	}
	// And the check does look at that layer.
	if err := os.Remove(filepath.Join(s.layerDir(top.Layers[1].DiffID), "etc/hostname")); err != nil {
		t.Fatalf("the commit has no whiteout for /etc/hostname: %v", err)
	}
	problems, err = s.Check(ctx, &CheckOptions{Layers: true})
	if err != nil || !hasProblem(problems, ProblemLayerContent, filepath.Dir(s.layerDir(top.Layers[1].DiffID))) {
		t.Fatalf("a deleted whiteout went unnoticed: %v\n%s", err, problemList(problems))
	}
}

// A check of the layers unpacks each again beside the store's copy: one
// that would eat into the store's reserve of free space ends the check
// with ErrNoSpace, as an import would, and never fills the filesystem.
func TestCheckLayersKeepsFreeSpace(t *testing.T) {
	ctx := context.Background()
	// 40 MiB of layer on 64 MiB: it fits once, not twice.
	root := filepath.Join(smallFilesystem(t, "64m", 10000), "store")
	s, err := Open(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Import(ctx, writeTemp(t, "layer.tar.zst", zstdBytes(t, manyFiles(t, 40, 1<<20, 'x'))), nil); err != nil {
		t.Fatal(err)
	}
	if problems, err := s.Check(ctx, nil); err != nil || len(problems) != 0 {
		t.Fatalf("intact store: Check = %v\n%s", err, problemList(problems))
	}
	problems, err := s.Check(ctx, &CheckOptions{Layers: true})
	if !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Check with Layers on a store without room for the layer twice: %v, want %v\n%s", err, ErrNoSpace, problemList(problems))
	}
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil {
		t.Fatal(err)
	}
	if st.Bavail == 0 {
		t.Errorf("the store's filesystem filled up")
	}
	entries, err := os.ReadDir(s.path("tmp"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("the check left tmp/%s", e.Name())
	}
}

// A problem prints as one line whatever the image named its files: a
// newline or an escape in a name cannot add lines to a report or reach
// the terminal.
func TestProblemStringOneLine(t *testing.T) {
	p := Problem{Kind: ProblemLayerContent, Path: "/store/layers/x", Detail: "/a\nfake: problem\x1b[2J: size 1, want 2"}
	s := p.String()
	if strings.ContainsAny(s, "\n\x1b") {
		t.Errorf("Problem.String() = %q, want one line of printable text", s)
	}
	if !strings.Contains(s, `/a\nfake: problem\x1b[2J: size 1, want 2`) {
		t.Errorf("Problem.String() = %q, want the name escaped, not dropped", s)
	}
	plain := Problem{Kind: ProblemOrphan, Path: "/store/blobs/sha256/ab", Detail: "no image uses it"}
	if got, want := plain.String(), "orphan: /store/blobs/sha256/ab: no image uses it"; got != want {
		t.Errorf("Problem.String() = %q, want %q", got, want)
	}
}

// shortCases reports whether a table's case i is past what -short runs:
// each case imports an image into a store of its own, which the race
// detector (make test's -race -short run) makes ten times slower. The
// first cases take Check's paths under the race detector; the plain run
// takes every case.
func shortCases(t *testing.T, i int) bool {
	if testing.Short() && i >= 3 {
		t.Logf("-short: the first 3 cases only")
		return true
	}
	return false
}
