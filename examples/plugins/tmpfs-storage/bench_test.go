package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/berth-dev/berth/plugin"
	"github.com/berth-dev/berth/sandbox"
)

// BenchmarkStartExit runs `true` in a sandbox on the alpine image, start
// to exit, with its rootfs from berth's built-in store (an overlay of the
// layers on the store's disk) and from this plugin (an overlay of the
// same layers on a tmpfs, over the plugin protocol):
//
//	go test -run '^$' -bench StartExit -benchtime 50x ./examples/plugins/tmpfs-storage
func BenchmarkStartExit(b *testing.B) {
	setup(b)
	b.Run("builtin-overlay", func(b *testing.B) {
		benchStartExit(b, shared.env.Store)
	})
	b.Run("tmpfs-plugin", func(b *testing.B) {
		dir := b.TempDir()
		if err := os.Chmod(dir, 0o711); err != nil {
			b.Fatal(err)
		}
		if err := os.Mkdir(filepath.Join(dir, "mnt"), 0o711); err != nil {
			b.Fatal(err)
		}
		st, err := plugin.OpenStorage(context.Background(), shared.bin, &plugin.Options{
			Store:    shared.env.Store,
			MountDir: filepath.Join(dir, "mnt"),
			RunDir:   filepath.Join(dir, "run"),
			Settings: map[string]string{"size": "64m"},
		})
		if err != nil {
			b.Fatal(err)
		}
		defer st.Close()
		benchStartExit(b, st)
	})
}

func benchStartExit(b *testing.B, st sandbox.Storage) {
	ctx := context.Background()
	for b.Loop() {
		sb := sandbox.New("alpine:test", &sandbox.Options{
			Storage: st, Cgroups: shared.env.Cgroups, StateDir: shared.env.StateDir,
			Args: []string{"true"},
		})
		res, err := sb.Run(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if !res.Success() {
			b.Fatalf("true exited %d", res.ExitCode)
		}
	}
}
