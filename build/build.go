package build

import (
	"context"
	"errors"

	"github.com/berth-dev/berth/layerfs"
)

// Options configure Build.
type Options struct {
	// Context is the build context directory.
	Context string
	// Dockerfile is the Dockerfile's path; empty means Context/Dockerfile.
	Dockerfile string
	// Tags name the image built.
	Tags []string
	// BuildArgs give values to the Dockerfile's ARGs.
	BuildArgs map[string]string
	// NoCache builds every step again.
	NoCache bool
}

// Result is what Build made.
type Result struct {
	Image *layerfs.Image
}

// Build builds the image opts describe into store.
func Build(ctx context.Context, store *layerfs.Store, opts *Options) (*Result, error) {
	return nil, errors.ErrUnsupported // day-0 contract
}
