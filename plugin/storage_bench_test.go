package plugin_test

import (
	"testing"

	"github.com/berth-dev/berth/layerfs"
)

// BenchmarkStoragePrepareRelease measures a rootfs's round trip through
// a storage plugin: the two calls, berth's checks, its mounts (idmapped
// ones under a user namespace) and their undoing.
func BenchmarkStoragePrepareRelease(b *testing.B) {
	e := newStorageEnv(b)
	s := e.open(b, nil)
	for _, mode := range []string{"bind", "overlay"} {
		b.Run(mode, func(b *testing.B) {
			key := mode + "--bench"
			for b.Loop() {
				if _, err := s.Prepare(ctx, key, e.img, nil); err != nil {
					b.Fatal(err)
				}
				if err := s.Release(ctx, key); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("overlay-userns", func(b *testing.B) {
		ns := newUserNS(b)
		popts := &layerfs.PrepareOptions{UserNS: ns, UIDMap: usernsMaps, GIDMap: usernsMaps}
		for b.Loop() {
			if _, err := s.Prepare(ctx, "overlay--benchns", e.img, popts); err != nil {
				b.Fatal(err)
			}
			if err := s.Release(ctx, "overlay--benchns"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("builtin-overlay", func(b *testing.B) {
		for b.Loop() {
			if _, err := e.store.Prepare(ctx, "bench", e.img, nil); err != nil {
				b.Fatal(err)
			}
			if err := e.store.Release(ctx, "bench"); err != nil {
				b.Fatal(err)
			}
		}
	})
}
