package layerfs

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestReleaseDamagedRecord damages the record of a prepared, mounted
// rootfs in every way a crash, a power cut or a stray editor can, and
// checks that Release still frees everything: the overlay or the copy,
// a disk quota's loop filesystem and device, and the directory.
func TestReleaseDamagedRecord(t *testing.T) {
	damages := []struct {
		name   string
		damage func(t *testing.T, record string)
	}{
		{"empty", func(t *testing.T, p string) { write(t, p, "") }},
		{"truncated", func(t *testing.T, p string) {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			write(t, p, string(b[:len(b)/2]))
		}},
		{"garbled", func(t *testing.T, p string) { write(t, p, "\x00\xff{]") }},
		{"null", func(t *testing.T, p string) { write(t, p, "null") }},
		{"unknown driver", func(t *testing.T, p string) { write(t, p, `{"driver":"zfs"}`) }},
		{"missing", func(t *testing.T, p string) {
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
		}},
		{"a directory", func(t *testing.T, p string) {
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(p, 0o700); err != nil {
				t.Fatal(err)
			}
		}},
	}
	setups := []struct {
		name   string
		driver string
		opts   *PrepareOptions
	}{
		{"overlay", "", nil},
		{"overlay with disk quota", "", &PrepareOptions{DiskQuota: testQuota}},
		{"copy", "copy", nil},
	}
	for _, setup := range setups {
		t.Run(setup.name, func(t *testing.T) {
			s, img := quotaStore(t, "", setup.driver)
			for _, d := range damages {
				t.Run(d.name, func(t *testing.T) {
					key := "damaged"
					r, err := s.Prepare(ctx, key, img, setup.opts)
					if err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(filepath.Join(r.Path, "written"), []byte("x"), 0o644); err != nil {
						t.Fatal(err)
					}
					if setup.driver != "copy" && len(mountedUnder(t, s.rootfsDir(key))) == 0 {
						t.Fatal("nothing mounted for the rootfs: the test proves nothing")
					}
					d.damage(t, s.path("rootfs", key, "rootfs.json"))
					if err := s.Release(ctx, key); err != nil {
						t.Fatalf("release: %v", err)
					}
					if m := mountedUnder(t, s.Root()); len(m) > 0 {
						t.Errorf("still mounted: %q", m)
					}
					if l := loopsBackedBy(t, s.Root()); len(l) > 0 {
						t.Errorf("loop devices still attached: %q", l)
					}
					if _, err := os.Lstat(s.rootfsDir(key)); !errors.Is(err, os.ErrNotExist) {
						t.Errorf("rootfs directory left: %v", err)
					}
					keys, err := s.Rootfses(ctx)
					if err != nil {
						t.Fatal(err)
					}
					if slices.Contains(keys, key) {
						t.Errorf("rootfs still listed: %q", keys)
					}
					if err := s.Release(ctx, key); !errors.Is(err, ErrNotFound) {
						t.Errorf("second release: %v, want ErrNotFound", err)
					}
				})
			}
		})
	}
}

// TestGCKeepsLayersUnderDamagedRecord checks that GC deletes no layer that
// a mounted rootfs, whose record no longer says which layers it uses,
// may be showing, whether the record is garbled or gone; once Release has
// freed it, they go.
func TestGCKeepsLayersUnderDamagedRecord(t *testing.T) {
	for _, damage := range []struct {
		name string
		do   func(t *testing.T, p string)
	}{
		{"garbled", func(t *testing.T, p string) { write(t, p, "{") }},
		{"missing", func(t *testing.T, p string) {
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(damage.name, func(t *testing.T) {
			s, img := quotaStore(t, "", "")
			r, err := s.Prepare(ctx, "held", img, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Remove(ctx, img.Digest.String()); err != nil {
				t.Fatal(err)
			}
			damage.do(t, s.path("rootfs", "held", "rootfs.json"))
			res, err := s.GC(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if res.Layers != 0 {
				t.Errorf("gc removed %d layers from under a mounted rootfs", res.Layers)
			}
			if _, err := os.Stat(filepath.Join(r.Path, "bin", "busybox")); err != nil {
				t.Errorf("the rootfs after gc: %v", err)
			}
			if err := s.Release(ctx, "held"); err != nil {
				t.Fatal(err)
			}
			if res, err := s.GC(ctx); err != nil || res.Layers != len(img.Layers) {
				t.Errorf("gc after release: %+v, %v; want %d layers removed", res, err, len(img.Layers))
			}
		})
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestGCRemovesHalfWrittenRecords checks that GC removes the temporary
// files a kill leaves beside image records and names, and nothing else.
func TestGCRemovesHalfWrittenRecords(t *testing.T) {
	s, img := quotaStore(t, "", "")
	temps := []string{
		s.path("refs", ".tmp-alpine%3Alatest-123"),
		s.path("images", ".tmp-"+img.Digest.Hex+"-456"),
	}
	for _, p := range temps {
		write(t, p, "half")
	}
	if _, err := s.GC(ctx); err != nil {
		t.Fatal(err)
	}
	for _, p := range temps {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left: %v", p, err)
		}
	}
	if got, err := s.Image(ctx, img.Names[0]); err != nil || got.Digest != img.Digest {
		t.Errorf("the image after gc: %v, %v", got, err)
	}
}
