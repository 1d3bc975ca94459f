package layerfs

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// A layer whose root holds .wh..wh..opq replaces everything below it: the
// rootfs shows none of the lower layers' files, with either driver, and a
// diff and commit of it do not bring them back.
func TestOpaqueRootHidesLowerLayers(t *testing.T) {
	bottom := buildTar(t,
		dirEntry("etc/", 0o755), fileEntry("etc/lower", "lower", 0o644),
		fileEntry("old", "old", 0o644), dirEntry("dir/", 0o755), fileEntry("dir/x", "x", 0o644))
	// The marker comes after an entry, as tar order allows.
	middle := buildTar(t,
		fileEntry("new", "new", 0o644), fileEntry(".wh..wh..opq", "", 0),
		dirEntry("etc/", 0o755), fileEntry("etc/upper", "upper", 0o644))
	top := buildTar(t, fileEntry("top", "top", 0o644), fileEntry(".wh.new", "", 0))

	for _, driver := range []string{"overlay", "copy"} {
		t.Run(driver, func(t *testing.T) {
			s := newStore(t, &Options{Driver: driver})
			layout := t.TempDir()
			writeLayout(t, layout, "opaque:1", true, bottom, middle, top)
			img, err := s.Import(ctx, layout, nil)
			if err != nil {
				t.Fatal(err)
			}
			r := prepare(t, s, "o", img)
			want := []string{"etc", "etc/upper", "top"}
			if got := sortedNames(listTree(t, r.Path)); !slices.Equal(got, want) {
				t.Fatalf("rootfs shows %v, want %v", got, want)
			}
			for _, p := range []string{"old", "etc/lower", "dir/x"} {
				if _, err := os.Lstat(filepath.Join(r.Path, p)); err == nil {
					t.Errorf("%s, which only a hidden layer has, can be opened", p)
				}
			}

			// Deleting a file no visible layer has is no change.
			if err := os.WriteFile(filepath.Join(r.Path, "added"), []byte("a"), 0o644); err != nil {
				t.Fatal(err)
			}
			var diff bytes.Buffer
			if err := s.Diff(ctx, "o", &diff); err != nil {
				t.Fatal(err)
			}
			var names []string
			tr := tar.NewReader(&diff)
			for {
				hdr, err := tr.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				names = append(names, strings.TrimSuffix(hdr.Name, "/"))
			}
			if !slices.Equal(names, []string{"added"}) {
				t.Errorf("diff holds %v, want [added]", names)
			}
			c, err := s.Commit(ctx, "o", nil)
			if err != nil {
				t.Fatal(err)
			}
			r2 := prepare(t, s, "c", c)
			want = []string{"added", "etc", "etc/upper", "top"}
			if got := sortedNames(listTree(t, r2.Path)); !slices.Equal(got, want) {
				t.Errorf("committed image shows %v, want %v", got, want)
			}
		})
	}
}

func sortedNames(tree map[string]treeEntry) []string {
	var names []string
	for n := range tree {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// An opaque root counts in either form the unpacker leaves: the overlay
// attribute, or the OCI marker where the filesystem refuses that.
func TestVisibleLayers(t *testing.T) {
	base := t.TempDir()
	mk := func(name string) string {
		p := filepath.Join(base, name)
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	plain, attr, marker, other := mk("plain"), mk("attr"), mk("marker"), mk("other")
	if err := unix.Lsetxattr(attr, overlayOpaqueXattr, []byte("y"), 0); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(marker, whiteoutOpaque), nil, 0); err != nil {
		t.Fatal(err)
	}
	// A directory of that name is not a marker.
	if err := os.Mkdir(filepath.Join(other, whiteoutOpaque), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ in, want []string }{
		{[]string{plain, other}, []string{plain, other}},
		{[]string{plain, attr, other}, []string{plain, attr}},
		{[]string{marker, plain}, []string{marker}},
		{[]string{other, plain, marker, attr}, []string{other, plain, marker}},
		{nil, nil},
	} {
		got, err := visibleLayers(tt.in)
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("visibleLayers(%v) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	if _, err := visibleLayers([]string{filepath.Join(base, "missing")}); err == nil {
		t.Error("a missing layer directory gives no error")
	}
}
