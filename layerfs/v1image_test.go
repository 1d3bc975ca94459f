package layerfs

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"
)

func importBusybox(t *testing.T) (*Store, *Image) {
	t.Helper()
	s := newStore(t, nil)
	img, err := s.Import(context.Background(), sharedImage(t, "busybox-1.38-musl-oci"), &ImportOptions{Name: "busybox:1"})
	if err != nil {
		t.Fatal(err)
	}
	return s, img
}

// TestV1ImageBytesAsStored checks that the image a push reads is the
// store's bytes: manifest, config and layer, so the digests agree.
func TestV1ImageBytesAsStored(t *testing.T) {
	s, img := importBusybox(t)
	v, err := s.V1Image(context.Background(), "busybox:1")
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if d, err := v.Digest(); err != nil || d != img.Digest {
		t.Errorf("digest %s (%v), the store's %s", d, err, img.Digest)
	}
	raw, _ := v.RawManifest()
	stored, _ := os.ReadFile(s.BlobPath(img.Digest))
	if !bytes.Equal(raw, stored) {
		t.Error("the manifest differs from the stored blob")
	}
	mt, _ := v.MediaType()
	if mt != img.MediaType {
		t.Errorf("media type %s, stored %s", mt, img.MediaType)
	}
	if c, err := v.ConfigName(); err != nil || c != img.ConfigDigest {
		t.Errorf("config %s (%v), the store's %s", c, err, img.ConfigDigest)
	}
	layers, err := v.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range layers {
		// Read twice: a push that retries reads a layer again.
		for range 2 {
			rc, err := l.Compressed()
			if err != nil {
				t.Fatal(err)
			}
			h, n, err := v1.SHA256(rc)
			rc.Close()
			if err != nil || h != img.Layers[i].Digest || n != img.Layers[i].Size {
				t.Errorf("layer %d read as %s, %d bytes (%v); stored %s, %d", i, h, n, err, img.Layers[i].Digest, img.Layers[i].Size)
			}
		}
		if d, _ := l.DiffID(); d != img.Layers[i].DiffID {
			t.Errorf("layer %d diff ID %s, want %s", i, d, img.Layers[i].DiffID)
		}
	}
	if _, err := s.V1Image(context.Background(), "nothere:1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("V1Image of a missing image: %v, want ErrNotFound", err)
	}
}

// TestV1ImageDamagedStore replaces a layer blob with what a damaged store
// might hold: a V1Image fails clearly, without hanging on a FIFO or
// following a symlink, and a blob whose bytes changed fails its read.
func TestV1ImageDamagedStore(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, path string)
		want   string
	}{
		{"fifo", func(t *testing.T, p string) {
			if err := unix.Mkfifo(p, 0o644); err != nil {
				t.Fatal(err)
			}
		}, "not a regular file"},
		{"symlink", func(t *testing.T, p string) {
			if err := os.Symlink("/etc/passwd", p); err != nil {
				t.Fatal(err)
			}
		}, "symlink"},
		{"directory", func(t *testing.T, p string) {
			if err := os.Mkdir(p, 0o755); err != nil {
				t.Fatal(err)
			}
		}, "not a regular file"},
		{"truncated", func(t *testing.T, p string) {
			if err := os.WriteFile(p, []byte("short"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "the store holds 5 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, img := importBusybox(t)
			p := s.BlobPath(img.Layers[0].Digest)
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			tc.damage(t, p)
			done := make(chan error, 1)
			go func() {
				v, err := s.V1Image(context.Background(), "busybox:1")
				if err == nil {
					v.Close()
				}
				done <- err
			}()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("V1Image of a damaged store: %v, want an error saying %q", err, tc.want)
				}
			case <-time.After(time.Minute):
				t.Fatal("V1Image hangs on a damaged store")
			}
		})
	}

	t.Run("changed", func(t *testing.T) {
		s, img := importBusybox(t)
		p := s.BlobPath(img.Layers[0].Digest)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 0xff
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		v, err := s.V1Image(context.Background(), "busybox:1")
		if err != nil {
			t.Fatal(err)
		}
		defer v.Close()
		layers, _ := v.Layers()
		rc, err := layers[0].Compressed()
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		if _, err := io.Copy(io.Discard, rc); !errors.Is(err, ErrDigestMismatch) {
			t.Errorf("reading a changed blob: %v, want ErrDigestMismatch", err)
		}
	})
}
