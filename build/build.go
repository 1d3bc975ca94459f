package build

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/layerfs"
	"github.com/berth-dev/berth/sandbox"
)

// Options configure Build.
type Options struct {
	// Context is the build context directory.
	Context string
	// Dockerfile is the Dockerfile's path; empty means Context/Dockerfile,
	// which is then read inside the context like any of its files.
	Dockerfile string
	// Tags name the image built.
	Tags []string
	// BuildArgs give values to the Dockerfile's ARGs.
	BuildArgs map[string]string
	// NoCache builds every step again.
	NoCache bool
	// Network is the network RUN steps are attached to; nil means none
	// (loopback only), as berth builds fetch nothing of their own.
	Network sandbox.Network
	// Output receives what RUN steps write to stdout and stderr; nil
	// discards it.
	Output io.Writer
	// MaxCopySize bounds, in bytes, the tar of what one COPY or ADD
	// copies (an archive ADD unpacks counts as unpacked); 0 means
	// layerfs.DefaultMaxImportSize. The store's own import limits apply
	// to the layer as well.
	MaxCopySize int64
	// Cgroups and StateDir are those of the RUN steps' sandboxes (see
	// sandbox.Options); zero values mean sandbox's defaults.
	Cgroups  *cgroup.Manager
	StateDir string
	// Progress, if set, is called as each step starts and as it ends,
	// from the goroutine that called Build, so that a command line can
	// print "Step 3/7 : RUN ..." before the step's output.
	Progress func(StepProgress)
	// Logger receives a record per step; nil discards them.
	Logger *slog.Logger
}

// StepProgress says that a step starts or has ended.
type StepProgress struct {
	Index, Total int  // the step's place among all the Dockerfile's, from 1
	Done         bool // the step has ended: Step is complete
	Step         Step // Line and Instruction; the rest once Done
}

// A Step is one instruction of the Dockerfile as it was carried out.
type Step struct {
	Line        int    // in the Dockerfile, from 1
	Instruction string // as written, variables not expanded
	// Cached says the step's result came from the build cache. FROM and
	// ARG, which make no image of their own, are never cached.
	Cached   bool
	Duration time.Duration
	Image    v1.Hash // the image after the step (manifest digest)
}

// Result is what Build made.
type Result struct {
	Image *layerfs.Image
	Steps []Step
}

// Build builds the image opts describe into store: the last stage of
// the Dockerfile, tagged with opts.Tags. A step whose instruction, parent
// image and (for COPY and ADD) files are those of an earlier build is
// taken from the cache instead of being run again. On error no tag is
// set; images of the steps that succeeded stay in the store as cache.
//
// Build is safe to call concurrently, on one store or several.
func Build(ctx context.Context, store *layerfs.Store, opts *Options) (*Result, error) {
	if store == nil {
		return nil, errors.New("build: no store")
	}
	if opts == nil || opts.Context == "" {
		return nil, errors.New("build: no context directory")
	}
	o := *opts
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Output == nil {
		o.Output = io.Discard
	}
	for _, tag := range o.Tags {
		if tag == "" {
			return nil, errors.New("build: empty tag")
		}
	}
	bctx, err := openContext(o.Context)
	if err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	defer bctx.Close()
	src, name, err := readDockerfile(bctx, o.Dockerfile)
	if err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	df, err := parseDockerfile(name, src)
	if err != nil {
		return nil, err
	}
	for _, w := range df.warnings {
		line := 0
		if w.Location != nil {
			line = w.Location.Start.Line
		}
		o.Logger.Warn("Dockerfile warning", "file", df.name, "line", line, "warning", w.Short)
	}
	b := &builder{store: store, opts: &o, ctx: bctx, df: df, cache: newCache(store)}
	img, err := b.run(ctx)
	if err != nil {
		return nil, err
	}
	for _, tag := range o.Tags {
		if err := store.Tag(ctx, img.Digest.String(), tag); err != nil {
			return nil, fmt.Errorf("build: tag %s: %w", tag, err)
		}
	}
	if len(o.Tags) > 0 {
		if img, err = store.Image(ctx, img.Digest.String()); err != nil {
			return nil, fmt.Errorf("build: %w", err)
		}
	}
	return &Result{Image: img, Steps: b.steps}, nil
}

// readDockerfile reads the Dockerfile: a path the caller chose is the
// caller's file, read as it is; the default one is a file of the context
// and is read inside it, so that a context whose Dockerfile is a link
// to a host file shows nothing of that file.
func readDockerfile(bctx *buildContext, path string) ([]byte, string, error) {
	if path == "" {
		data, err := bctx.readFile("Dockerfile", maxDockerfile)
		return data, "Dockerfile", err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, "", err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxDockerfile+1))
	if err != nil {
		return nil, "", fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > maxDockerfile {
		return nil, "", fmt.Errorf("%s: larger than %d bytes", path, maxDockerfile)
	}
	return data, filepath.Base(path), nil
}

// maxDockerfile bounds the Dockerfile read: no real one comes near it.
const maxDockerfile = 4 << 20
