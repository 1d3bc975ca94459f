package layerfs

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// FuzzParseReference checks that every reference ParseReference accepts
// is in canonical form once printed, parses back to itself, and, when it
// can name an image in the store, makes a safe file name for refs/.
func FuzzParseReference(f *testing.F) {
	const hex64 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, s := range []string{
		"alpine", "alpine:3.20", "alpine@sha256:" + hex64, "alpine:3.20@sha256:" + hex64,
		"registry.local:5000/team/app:v1", "localhost:5000/a", "a/b/c/d__e-f.g",
		"", ":", "@", ":tag", "name:", "name@", "name@sha256:", "name@sha512:" + hex64,
		"Alpine", "../etc", "a/../b", "/abs", "a//b", "a:b:c", "a@b@c", ".", "..", "a/.",
		"alpine:" + strings.Repeat("t", 129), strings.Repeat("a", 256), strings.Repeat("a", 255) + ":" + strings.Repeat("t", 128),
		"caf\u00e9:1", "a:\u00e9", "a\x00b", "a\nb:c", "a%2Fb", "host:65536/x", "-a", "a-", "a:-t", "a:.t",
	} {
		f.Add(s)
	}
	// An empty store: looking a reference up in it finds nothing, or
	// says what is wrong with the reference, and touches no other file.
	store, err := Open(f.TempDir(), nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if _, err := store.Image(context.Background(), s); !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrInvalidReference) {
			t.Errorf("Image(%q) in an empty store: %v, want ErrNotFound or ErrInvalidReference", s, err)
		}
		r, err := ParseReference(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidReference) {
				t.Errorf("ParseReference(%q): %v, not ErrInvalidReference", s, err)
			}
			return
		}
		switch {
		case r.Name == "" || len(r.Name) > maxNameLength:
			t.Errorf("ParseReference(%q) gave name %q", s, r.Name)
		case r.Tag == "" && r.Digest == "":
			t.Errorf("ParseReference(%q) gave neither tag nor digest", s)
		case len(r.Tag) > 128:
			t.Errorf("ParseReference(%q) gave a tag of %d characters", s, len(r.Tag))
		}
		if r.Digest != "" {
			if _, err := v1.NewHash(r.Digest); err != nil {
				t.Errorf("ParseReference(%q) gave digest %q: %v", s, r.Digest, err)
			}
		}
		again, err := ParseReference(r.String())
		if err != nil || again != r {
			t.Errorf("ParseReference(%q) = %+v, but its String %q parses as %+v, %v", s, r, r.String(), again, err)
		}

		// Names without a digest are what the store records, one file each.
		names, err := nameList(s, "a name")
		if r.Digest != "" {
			if err == nil {
				t.Errorf("nameList(%q) accepted a digest", s)
			}
			return
		}
		if err != nil {
			if !errors.Is(err, ErrInvalidReference) {
				t.Errorf("nameList(%q): %v, not ErrInvalidReference", s, err)
			}
			return
		}
		if len(names) != 1 || names[0] != r.String() {
			t.Fatalf("nameList(%q) = %q, want [%q]", s, names, r.String())
		}
		file := refFile(names[0])
		if file == "." || file == ".." || strings.ContainsAny(file, "/\x00") || len(file) > 255 {
			t.Errorf("reference %q is stored as file %q (%d bytes), not a single file name", names[0], file, len(file))
		}
		if back, err := url.PathUnescape(file); err != nil || back != names[0] {
			t.Errorf("ref file %q reads back as %q, %v; want %q", file, back, err, names[0])
		}
	})
}
