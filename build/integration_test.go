package build

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-dev/berth/layerfs"
	"github.com/berth-dev/berth/sandbox"
)

const appDockerfile = `FROM alpine:test
ARG GREETING=hello
WORKDIR /app
COPY make-message.sh ./
RUN sh ./make-message.sh "$GREETING" > message.txt && echo built-it
ENV WHO=world
COPY data.txt /app/
CMD ["sh", "-c", "cat /app/message.txt; echo \"$WHO\"; cat /app/data.txt"]
`

// A multi-step Dockerfile builds, runs, and rebuilds from the cache:
// every step when nothing changed, and from a changed file's COPY on
// when one did.
func TestBuildRunAndCache(t *testing.T) {
	dir := writeContext(t, map[string]string{
		"Dockerfile":      appDockerfile,
		"make-message.sh": "echo \"$1 from $(cat /etc/alpine-release | cut -c1-4) as $(id -u)\"\n",
		"data.txt":        "data v1\n",
	})
	var out bytes.Buffer
	var events []StepProgress
	res, err := build(t, dir, func(o *Options) {
		o.Tags = []string{"app:test"}
		o.Output = &out
		o.BuildArgs = map[string]string{"GREETING": "hi"}
		o.Progress = func(p StepProgress) { events = append(events, p) }
	})
	if err != nil {
		t.Fatalf("build: %v\noutput:\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "built-it") {
		t.Errorf("RUN output not streamed: %q", out.String())
	}
	if !slices.Contains(res.Image.Names, "app:test") {
		t.Errorf("image names %q, want app:test", res.Image.Names)
	}
	if got := runImage(t, "app:test"); got != "hi from 3.20 as 0\nworld\ndata v1\n" {
		t.Errorf("the built image printed %q", got)
	}
	if len(res.Steps) != 8 {
		t.Fatalf("%d steps, want 8: %+v", len(res.Steps), res.Steps)
	}
	for _, s := range res.Steps {
		if s.Cached {
			t.Errorf("first build: line %d (%s) cached", s.Line, s.Instruction)
		}
	}
	if len(events) != 2*len(res.Steps) {
		t.Errorf("%d progress events for %d steps", len(events), len(res.Steps))
	}
	for i, p := range events {
		if p.Index != i/2+1 || p.Total != 8 || p.Done != (i%2 == 1) {
			t.Errorf("progress event %d = %+v", i, p)
		}
	}
	hist := res.Image.Config.History
	if !slices.ContainsFunc(hist, func(h v1.History) bool { return strings.HasPrefix(h.CreatedBy, "RUN sh ./make-message.sh") }) {
		t.Errorf("no RUN in the image's history: %+v", hist)
	}

	// Nothing changed: every step is cached, and the image is the same.
	again, err := build(t, dir, func(o *Options) {
		o.Tags = []string{"app:test"}
		o.BuildArgs = map[string]string{"GREETING": "hi"}
	})
	if err != nil {
		t.Fatal(err)
	}
	if again.Image.Digest != res.Image.Digest {
		t.Errorf("rebuild made %s, first build %s", again.Image.Digest, res.Image.Digest)
	}
	for _, s := range again.Steps {
		if !s.Cached && !noImage(s) {
			t.Errorf("rebuild: line %d (%s) not cached", s.Line, s.Instruction)
		}
	}

	// data.txt changed: its COPY and what follows run again.
	if err := os.WriteFile(filepath.Join(dir, "data.txt"), []byte("data v2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	third, err := build(t, dir, func(o *Options) {
		o.Tags = []string{"app:test"}
		o.BuildArgs = map[string]string{"GREETING": "hi"}
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range third.Steps {
		wantCached := s.Line < 7 && !noImage(s)
		if s.Cached != wantCached {
			t.Errorf("after a change to data.txt: line %d (%s) cached %v, want %v", s.Line, s.Instruction, s.Cached, wantCached)
		}
	}
	if got := runImage(t, "app:test"); !strings.HasSuffix(got, "data v2\n") {
		t.Errorf("rebuilt image printed %q", got)
	}

	// Another build argument: the RUN (which sees it) runs again.
	fourth, err := build(t, dir, func(o *Options) { o.BuildArgs = map[string]string{"GREETING": "bye"} })
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range fourth.Steps {
		if s.Line == 5 && s.Cached {
			t.Error("RUN cached across a different build argument")
		}
	}
	// NoCache runs every step again.
	fresh, err := build(t, dir, func(o *Options) {
		o.NoCache = true
		o.BuildArgs = map[string]string{"GREETING": "hi"}
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range fresh.Steps {
		if s.Cached {
			t.Errorf("NoCache: line %d cached", s.Line)
		}
	}

	// A cached image removed from the store is a cache miss, not an
	// error: the step runs again. (The NoCache build recorded its own
	// images in the cache.)
	var run Step
	for _, s := range fresh.Steps {
		if s.Line == 5 {
			run = s
		}
	}
	if err := testEnv.Store.Remove(context.Background(), run.Image.String()); err != nil {
		t.Fatal(err)
	}
	fifth, err := build(t, dir, func(o *Options) { o.BuildArgs = map[string]string{"GREETING": "hi"} })
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range fifth.Steps {
		if s.Line == 5 && s.Cached {
			t.Error("RUN taken from the cache after its image was removed")
		}
	}
	assertNoRootfs(t)
}

// Builds of one Dockerfile at once in one store all succeed, and agree.
func TestConcurrentBuilds(t *testing.T) {
	dir := writeContext(t, map[string]string{
		"Dockerfile": "FROM alpine:test\nCOPY f /f\nRUN cat /f > /g\nENV DONE=1\n",
		"f":          "concurrent",
	})
	const n = 4
	errs := make(chan error, n)
	results := make(chan *Result, n)
	for i := range n {
		go func() {
			res, err := build(t, dir, func(o *Options) { o.Tags = []string{fmt.Sprintf("concurrent:%d", i)} })
			errs <- err
			results <- res
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
		<-results
	}
	res, err := build(t, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range res.Steps {
		if !s.Cached && !noImage(s) {
			t.Errorf("line %d not cached after the concurrent builds", s.Line)
		}
	}
	assertNoRootfs(t)
}

// noImage reports whether s is a FROM or an ARG, which make no image.
func noImage(s Step) bool {
	return strings.HasPrefix(s.Instruction, "FROM ") || strings.HasPrefix(s.Instruction, "ARG ")
}

// runImage runs ref's default command and returns what it printed.
func runImage(t *testing.T, ref string) string {
	t.Helper()
	var out bytes.Buffer
	sb := sandbox.New(ref, &sandbox.Options{Storage: testEnv.Store, Cgroups: testEnv.Cgroups, StateDir: testEnv.StateDir, Stdout: &out, Stderr: &out})
	res, err := sb.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !res.Success() {
		t.Fatalf("%s exited %d: %s", ref, res.ExitCode, out.String())
	}
	return out.String()
}

// A failing RUN fails the build with its line and status, tags nothing
// and leaves no rootfs behind.
func TestRunFails(t *testing.T) {
	dir := writeContext(t, map[string]string{"Dockerfile": "FROM alpine:test\nENV X=1\nRUN echo partial > /p; exit 3\nCMD [\"true\"]\n"})
	_, err := build(t, dir, func(o *Options) { o.Tags = []string{"failing:test"} })
	if err == nil {
		t.Fatal("build succeeded")
	}
	if !strings.HasPrefix(err.Error(), "Dockerfile:3: RUN ") || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("error %q, want Dockerfile:3: RUN ...: exit status 3", err)
	}
	if _, err := testEnv.Store.Image(context.Background(), "failing:test"); !errors.Is(err, layerfs.ErrNotFound) {
		t.Errorf("failing:test: %v, want not found", err)
	}
	assertNoRootfs(t)
}

func assertNoRootfs(t *testing.T) {
	t.Helper()
	keys, err := testEnv.Store.Rootfses(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) > 0 {
		t.Errorf("rootfses left in the store: %q", keys)
	}
}

// A build cancelled during a RUN stops it, tags nothing and leaves no
// rootfs behind.
func TestCancelDuringRun(t *testing.T) {
	dir := writeContext(t, map[string]string{"Dockerfile": "FROM alpine:test\nRUN echo started; sleep 600\n"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &cancelOnOutput{cancel: cancel}
	o := &Options{Context: dir, Cgroups: testEnv.Cgroups, StateDir: testEnv.StateDir, Tags: []string{"cancelled:test"}, Output: out}
	_, err := Build(ctx, testEnv.Store, o)
	if err == nil || !errors.Is(err, context.Canceled) && !strings.Contains(err.Error(), "cancel") {
		t.Errorf("cancelled build: %v, want a cancellation error", err)
	}
	if _, err := testEnv.Store.Image(context.Background(), "cancelled:test"); !errors.Is(err, layerfs.ErrNotFound) {
		t.Errorf("cancelled:test: %v, want not found", err)
	}
	assertNoRootfs(t)
}

// cancelOnOutput cancels once the workload has written something: it
// is running.
type cancelOnOutput struct{ cancel func() }

func (c *cancelOnOutput) Write(p []byte) (int, error) {
	c.cancel()
	return len(p), nil
}
