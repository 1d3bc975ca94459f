package sandbox

import (
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkCopy copies a 64 MiB file into a running sandbox and out of
// it: go test -run XXX -bench BenchmarkCopy ./sandbox/
func BenchmarkCopy(b *testing.B) {
	const size = 64 << 20
	sb := New("alpine:test", opts(func(o *Options) { o.Args = []string{"sleep", "1000"} }))
	if err := sb.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer sb.Close()
	data := make([]byte, size)
	rand.Read(data)
	dir := b.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.WriteFile(src, data, 0o644); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.Run("to", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			if err := sb.CopyTo(ctx, src, "/big", nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("from", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			if err := sb.CopyFrom(ctx, "/big", filepath.Join(dir, "out"), nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}
