package safetree

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
)

// FuzzReadTarStaysInside unpacks arbitrary tar streams with a Writer and
// checks that nothing is made, changed or removed outside the destination:
// whatever the names, links and hard links, and in whatever order.
func FuzzReadTarStaysInside(f *testing.F) {
	seeds := [][]member{
		{{name: "../x", typ: tar.TypeReg, body: "x"}},
		{{name: "a", link: "/", typ: tar.TypeSymlink}, {name: "a/x", typ: tar.TypeReg, body: "x"}},
		{{name: "a", link: "..", typ: tar.TypeSymlink}, {name: "a/x", typ: tar.TypeDir}},
		{{name: "d", typ: tar.TypeDir}, {name: "d/l", link: "../..", typ: tar.TypeSymlink}, {name: "d/l/x", typ: tar.TypeReg, body: "x"}},
		{{name: "h", link: "../x", typ: tar.TypeLink}},
		{{name: "f", typ: tar.TypeReg, body: "in"}, {name: "h", link: "f", typ: tar.TypeLink}},
		{{name: "/abs/f", typ: tar.TypeReg, body: "in"}},
	}
	for _, s := range seeds {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, m := range s {
			h := &tar.Header{Name: m.name, Linkname: m.link, Typeflag: m.typ, Mode: 0o755}
			if m.typ == tar.TypeReg {
				h.Size = int64(len(m.body))
			}
			tw.WriteHeader(h)
			tw.Write([]byte(m.body))
		}
		tw.Close()
		f.Add(buf.Bytes())
	}
	f.Fuzz(func(t *testing.T, stream []byte) {
		parent := t.TempDir()
		dst := filepath.Join(parent, "dst")
		if err := os.Mkdir(dst, 0o755); err != nil {
			t.Fatal(err)
		}
		out, untouched := canary(t)
		// A link to the canary's directory beside the destination, as a
		// host path a hostile stream might aim at.
		if err := os.Symlink(out, filepath.Join(parent, "out")); err != nil {
			t.Fatal(err)
		}
		dir, err := os.Open(dst)
		if err != nil {
			t.Fatal(err)
		}
		defer dir.Close()
		w := NewWriter(int(dir.Fd()), WriteOptions{UID: -1, GID: -1})
		ReadTar(context.Background(), bytes.NewReader(stream), func(e *Entry) error { return w.Write(context.Background(), e) })
		entries, err := os.ReadDir(parent)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != 2 {
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			t.Errorf("the destination's parent holds %q, want only dst and out", names)
		}
		untouched()
	})
}
