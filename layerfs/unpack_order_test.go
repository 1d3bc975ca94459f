package layerfs

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// summarizeTree describes the tree at dir in a line an entry: "dir",
// "file CONTENT" or "symlink TARGET", keyed by slash path.
func summarizeTree(t testing.TB, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for name, e := range listTree(t, dir) {
		switch e.Type {
		case "file":
			b, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			out[name] = "file " + string(b)
		case "symlink":
			out[name] = "symlink " + e.Target
		default:
			out[name] = e.Type
		}
	}
	return out
}

// The order of a layer's entries is the image's to choose: a later entry
// replaces an earlier one of the same name, and what follows goes where
// the path leads at that point, as Docker and containerd unpack layers.
func TestUnpackEntryOrder(t *testing.T) {
	tests := []struct {
		name    string
		entries []entry
		want    map[string]string
		wantErr string // instead of want
	}{
		{
			// The directory a is replaced, so its old descriptor must not
			// be where a/b goes.
			name: "dir, file, dir, child",
			entries: []entry{
				dirEntry("a/", 0o755), fileEntry("a/x", "x", 0o644),
				fileEntry("a", "file", 0o644), dirEntry("a/", 0o755), fileEntry("a/b", "b", 0o644),
			},
			want: map[string]string{"a": "dir", "a/b": "file b"},
		},
		{
			name: "dir, symlink, child",
			entries: []entry{
				dirEntry("d/", 0o755), dirEntry("a/", 0o755), fileEntry("a/x", "x", 0o644),
				symlinkEntry("a", "d"), fileEntry("a/b", "b", 0o644),
			},
			want: map[string]string{"a": "symlink d", "d": "dir", "d/b": "file b"},
		},
		{
			// containerd and Docker refuse this too: a/b has no directory.
			name: "dir, file, child",
			entries: []entry{
				dirEntry("a/", 0o755), fileEntry("a/x", "x", 0o644),
				fileEntry("a", "file", 0o644), fileEntry("a/b", "b", 0o644),
			},
			wantErr: `layer entry "a/b": parent directory: not a directory`,
		},
		{
			name: "file, dir, child",
			entries: []entry{
				fileEntry("a", "file", 0o644), dirEntry("a/", 0o755), fileEntry("a/b", "b", 0o644),
			},
			want: map[string]string{"a": "dir", "a/b": "file b"},
		},
		{
			name: "symlink, child, dir, child",
			entries: []entry{
				dirEntry("d/", 0o755), symlinkEntry("a", "d"), fileEntry("a/x", "x", 0o644),
				dirEntry("a/", 0o755), fileEntry("a/b", "b", 0o644),
			},
			want: map[string]string{"a": "dir", "a/b": "file b", "d": "dir", "d/x": "file x"},
		},
		{
			name: "symlink, child, other symlink, child",
			entries: []entry{
				dirEntry("d/", 0o755), dirEntry("e/", 0o755),
				symlinkEntry("a", "d"), fileEntry("a/x", "x", 0o644),
				symlinkEntry("a", "e"), fileEntry("a/y", "y", 0o644),
			},
			want: map[string]string{"a": "symlink e", "d": "dir", "d/x": "file x", "e": "dir", "e/y": "file y"},
		},
		{
			name: "deeper parent replaced",
			entries: []entry{
				dirEntry("a/", 0o755), dirEntry("a/s/", 0o755), fileEntry("a/s/x", "x", 0o644),
				fileEntry("a", "file", 0o644), dirEntry("a/", 0o755), fileEntry("a/s/b", "b", 0o644),
			},
			want: map[string]string{"a": "dir", "a/s": "dir", "a/s/b": "file b"},
		},
		{
			// a/s was reached through the symlink a; the directory it led
			// to is replaced, not a.
			name: "symlink target replaced",
			entries: []entry{
				dirEntry("d/", 0o755), symlinkEntry("a", "d"), dirEntry("a/s/", 0o755), fileEntry("a/s/x", "x", 0o644),
				fileEntry("d", "file", 0o644), dirEntry("d/", 0o755), fileEntry("a/s/y", "y", 0o644),
			},
			want: map[string]string{"a": "symlink d", "d": "dir", "d/s": "dir", "d/s/y": "file y"},
		},
		{
			name: "hard link into a replaced directory",
			entries: []entry{
				dirEntry("a/", 0o755), fileEntry("a/x", "old", 0o644),
				fileEntry("a", "file", 0o644), dirEntry("a/", 0o755), fileEntry("a/x", "new", 0o644),
				hardlinkEntry("h", "a/x"),
			},
			want: map[string]string{"a": "dir", "a/x": "file new", "h": "file new"},
		},
		{
			name: "hard link through a replaced symlink",
			entries: []entry{
				dirEntry("d/", 0o755), dirEntry("e/", 0o755), fileEntry("d/t", "d", 0o644), fileEntry("e/t", "e", 0o644),
				symlinkEntry("a", "d"), fileEntry("a/z", "z", 0o644),
				symlinkEntry("a", "e"), hardlinkEntry("a/h", "a/t"),
			},
			want: map[string]string{
				"a": "symlink e", "d": "dir", "d/t": "file d", "d/z": "file z",
				"e": "dir", "e/t": "file e", "e/h": "file e",
			},
		},
		{
			name: "hard link replaces a directory",
			entries: []entry{
				fileEntry("f", "f", 0o644), dirEntry("a/", 0o755), fileEntry("a/x", "x", 0o644),
				hardlinkEntry("a", "f"), fileEntry("g", "g", 0o644),
			},
			want: map[string]string{"a": "file f", "f": "file f", "g": "file g"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			layer, outside := unpackSandbox(t)
			err := unpackTar(context.Background(), bytes.NewReader(buildTar(t, tt.entries...)), layer)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("unpackTar = %v, want an error saying %q", err, tt.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			} else if diff := cmp.Diff(tt.want, summarizeTree(t, layer)); diff != "" {
				t.Errorf("layer (-want +got):\n%s", diff)
			}
			if got := summarizeTree(t, outside); len(got) != 2 {
				t.Errorf("outside the layer: %v", got)
			}
		})
	}
}

// A hard link's inode is shared: the one in a replaced directory is the
// new one's.
func TestUnpackHardLinkAfterReplace(t *testing.T) {
	layer, _ := unpackSandbox(t)
	entries := []entry{
		dirEntry("a/", 0o755), fileEntry("a/x", "old", 0o644),
		symlinkEntry("a", "."), dirEntry("a/", 0o755), fileEntry("a/x", "new", 0o644),
		hardlinkEntry("h", "a/x"),
	}
	if err := unpackTar(context.Background(), bytes.NewReader(buildTar(t, entries...)), layer); err != nil {
		t.Fatal(err)
	}
	var a, h unix.Stat_t
	if err := errors.Join(unix.Lstat(filepath.Join(layer, "a/x"), &a), unix.Lstat(filepath.Join(layer, "h"), &h)); err != nil {
		t.Fatal(err)
	}
	if a.Ino != h.Ino || a.Nlink != 2 {
		t.Errorf("a/x is inode %d (%d links), h inode %d", a.Ino, a.Nlink, h.Ino)
	}
}
