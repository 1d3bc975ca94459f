package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/berth-dev/berth/plugin"
	"github.com/berth-dev/berth/sandbox"
)

// BenchmarkStartExit runs a workload in a sandbox on the alpine image,
// start to exit, with its rootfs from berth's built-in store (an overlay
// of the layers with its upper directory on the store's disk) and from
// this plugin (an overlay of the same layers with its upper directory on
// a tmpfs, over the plugin protocol). The workloads are `true`, and a dd
// writing 32 MiB to the rootfs:
//
//	go test -run '^$' -bench StartExit -benchtime 50x ./examples/plugins/tmpfs-storage
func BenchmarkStartExit(b *testing.B) {
	setup(b)
	workloads := []struct {
		name string
		args []string
	}{
		{"true", []string{"true"}},
		{"write32M", []string{"dd", "if=/dev/zero", "of=/big", "bs=1M", "count=32"}},
	}
	for _, w := range workloads {
		b.Run("builtin-overlay/"+w.name, func(b *testing.B) {
			benchStartExit(b, shared.env.Store, w.args)
		})
	}
	b.Run("tmpfs-plugin", func(b *testing.B) {
		dir := testDir(b)
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
		for _, w := range workloads {
			b.Run(w.name, func(b *testing.B) {
				benchStartExit(b, st, w.args)
			})
		}
	})
}

func benchStartExit(b *testing.B, st sandbox.Storage, args []string) {
	ctx := context.Background()
	for b.Loop() {
		sb := sandbox.New("alpine:test", &sandbox.Options{
			Storage: st, Cgroups: shared.env.Cgroups, StateDir: shared.env.StateDir,
			Args: args,
		})
		res, err := sb.Run(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if !res.Success() {
			b.Fatalf("%v exited %d", args, res.ExitCode)
		}
	}
}

// BenchmarkPrepareRelease makes and frees one rootfs of the alpine image:
// in berth's built-in store; through this plugin as berth uses it (the
// call over the protocol, berth's checks and its overlay mount); and the
// plugin's own work alone, called in process (tmpfs mount, directories,
// record, unmount), which the difference to the second is the protocol's
// and berth's share of.
//
//	go test -run '^$' -bench PrepareRelease -benchtime 200x ./examples/plugins/tmpfs-storage
func BenchmarkPrepareRelease(b *testing.B) {
	setup(b)
	ctx := context.Background()
	img, err := shared.env.Store.Image(ctx, "alpine:test")
	if err != nil {
		b.Fatal(err)
	}
	b.Run("builtin-overlay", func(b *testing.B) {
		for b.Loop() {
			if _, err := shared.env.Store.Prepare(ctx, "bench", img, nil); err != nil {
				b.Fatal(err)
			}
			if err := shared.env.Store.Release(ctx, "bench"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("tmpfs-plugin", func(b *testing.B) {
		dir := testDir(b)
		if err := os.Mkdir(filepath.Join(dir, "mnt"), 0o711); err != nil {
			b.Fatal(err)
		}
		st, err := plugin.OpenStorage(ctx, shared.bin, &plugin.Options{
			Store:    shared.env.Store,
			MountDir: filepath.Join(dir, "mnt"),
			RunDir:   filepath.Join(dir, "run"),
		})
		if err != nil {
			b.Fatal(err)
		}
		defer st.Close()
		for b.Loop() {
			if _, err := st.Prepare(ctx, "bench", img, nil); err != nil {
				b.Fatal(err)
			}
			if err := st.Release(ctx, "bench"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("tmpfs-in-process", func(b *testing.B) {
		s := newTestStorage(b, "256m")
		layers, err := shared.env.Store.VisibleLayers(img)
		if err != nil {
			b.Fatal(err)
		}
		req := plugin.PrepareRequest{Key: "bench"}
		for _, l := range layers {
			req.Layers = append(req.Layers, plugin.Layer{DiffID: l.DiffID.String(), UnpackedPath: shared.env.Store.LayerDir(l.DiffID)})
		}
		for b.Loop() {
			if _, err := s.Prepare(ctx, &req); err != nil {
				b.Fatal(err)
			}
			if err := s.Release(ctx, "bench"); err != nil {
				b.Fatal(err)
			}
		}
	})
}
