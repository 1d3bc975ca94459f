package sandbox

import (
	"context"
	"errors"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-dev/berth/layerfs"
)

// CommitOptions describe the image Commit makes.
type CommitOptions struct {
	Author  string // recorded in the config and the new layer's history
	Message string // the history entry's comment
	// CreatedBy is the history entry's created_by, such as the
	// Dockerfile instruction that made the layer; empty means
	// "berth commit".
	CreatedBy string
	// Config, if set, replaces the image's runtime configuration (Cmd,
	// Entrypoint, Env, WorkingDir, User, ExposedPorts, Labels, ...) in
	// the new image; nil keeps the sandbox's image's.
	Config *v1.Config
	// NoPause commits a running sandbox without freezing it first. By
	// default its processes are frozen while the diff is read, so that
	// the layer is one consistent moment of the rootfs.
	NoPause bool
}

// Commit stores what the sandbox changed in its rootfs as a new layer on
// top of its image, and the result as a new image tagged name (empty for
// none). The sandbox may be running, or have exited with
// Options.KeepRootfs set. Storage that cannot commit gives an error that
// errors.Is errors.ErrUnsupported.
func (s *Sandbox) Commit(ctx context.Context, name string, opts *CommitOptions) (*layerfs.Image, error) {
	return nil, errors.ErrUnsupported // day-0 contract: filled in by the commit work
}
