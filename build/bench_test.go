package build

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// benchContext is the integration test's multi-step build context.
func benchContext(b *testing.B) string {
	b.Helper()
	dir := b.TempDir()
	for name, body := range map[string]string{
		"Dockerfile":      appDockerfile,
		"make-message.sh": "echo \"$1 from $(cat /etc/alpine-release)\"\n",
		"data.txt":        "data\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	return dir
}

func benchBuild(b *testing.B, noCache bool) {
	dir := benchContext(b)
	o := &Options{Context: dir, Cgroups: testEnv.Cgroups, StateDir: testEnv.StateDir, NoCache: noCache}
	if _, err := Build(context.Background(), testEnv.Store, o); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := Build(context.Background(), testEnv.Store, o); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBuild builds the 8-step Dockerfile of TestBuildRunAndCache
// (one RUN, two COPYs, four metadata steps) with no cache.
func BenchmarkBuild(b *testing.B) { benchBuild(b, true) }

// BenchmarkCachedRebuild rebuilds it unchanged: every step from the
// cache.
func BenchmarkCachedRebuild(b *testing.B) { benchBuild(b, false) }
