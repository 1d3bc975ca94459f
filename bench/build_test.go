package bench_test

// Benchmarks of `berth build`'s engine: a small Dockerfile over the
// shared Alpine image built from nothing, and rebuilt from the cache
// (make bench-ship; see ship_test.go).

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/berth-dev/berth/build"
	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/layerfs"
)

// shipDockerfile is a small build over the shared Alpine image: a copied
// script, run; metadata steps; nothing fetched from the network.
const shipDockerfile = `FROM alpine:bench
ARG GREETING=hello
ENV APP_HOME=/app
WORKDIR /app
COPY greet.sh /app/greet.sh
RUN sh /app/greet.sh "$GREETING" > /app/greeting && chmod 0755 /app/greet.sh
LABEL org.opencontainers.image.title=bench
CMD ["/app/greet.sh"]
`

// buildEnv is a store holding the Alpine image and a context directory
// holding shipDockerfile.
func buildEnv(b *testing.B) (*layerfs.Store, *build.Options) {
	b.Helper()
	tmp := benchRoot(b)
	store, err := layerfs.Open(filepath.Join(tmp, "store"), nil)
	if err != nil {
		b.Fatal(err)
	}
	const tarball = "../../shared/images/alpine-minirootfs-3.20.3-x86_64.tar.gz"
	if _, err := store.Import(context.Background(), tarball, &layerfs.ImportOptions{Name: "alpine:bench"}); err != nil {
		b.Fatalf("import %s: %v", tarball, err)
	}
	dir := filepath.Join(tmp, "context")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	files := map[string]string{
		"Dockerfile": shipDockerfile,
		"greet.sh":   "#!/bin/sh\necho \"${1:-hi} from $APP_HOME\"\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	cgm, err := cgroup.NewManager(cgroup.Options{Parent: fmt.Sprintf("berth-bench-build-%d", os.Getpid())})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cgm.RemoveParent() })
	return store, &build.Options{
		Context:  dir,
		Tags:     []string{"built:bench"},
		Cgroups:  cgm,
		StateDir: filepath.Join(tmp, "state"),
	}
}

// BenchmarkBuild builds the small Dockerfile from nothing each time
// (NoCache): a sandbox for the RUN and a layer committed for each step
// that changes the filesystem.
func BenchmarkBuild(b *testing.B) {
	store, opts := buildEnv(b)
	opts.NoCache = true
	b.ResetTimer()
	for range b.N {
		if _, err := build.Build(context.Background(), store, opts); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBuildCached rebuilds the same Dockerfile and context, every
// step found in the cache.
func BenchmarkBuildCached(b *testing.B) {
	store, opts := buildEnv(b)
	if _, err := build.Build(context.Background(), store, opts); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		if _, err := build.Build(context.Background(), store, opts); err != nil {
			b.Fatal(err)
		}
	}
}
