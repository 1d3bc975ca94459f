package registry

import (
	"context"
	"net/http"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-dev/berth/layerfs"
)

// Progress reports how a transfer goes, one blob at a time.
type Progress struct {
	Blob     v1.Hash // the blob being moved
	Done     int64   // bytes of it moved so far
	Total    int64   // its size
	Skipped  bool    // already there (in the store, or in the registry)
	Finished bool    // the blob is complete and checked
}

// Options configure a registry connection; the zero value is ready to use.
type Options struct {
	// Keychain finds credentials; nil means Docker's configuration
	// file and its credential helpers.
	Keychain authn.Keychain
	// Insecure allows plain HTTP, and TLS without verification, for
	// this registry. Loopback registries need not be marked.
	Insecure bool
	// Transport, if set, carries the requests.
	Transport http.RoundTripper
	// Progress, if set, is called as blobs move, from one goroutine at
	// a time.
	Progress func(Progress)
	// ConfigDir is the Docker configuration directory whose
	// config.json holds credentials, for Login, Logout and the default
	// Keychain; empty means $DOCKER_CONFIG, else ~/.docker.
	ConfigDir string
}

// PullOptions configure Pull.
type PullOptions struct {
	Options
	// Platform picks one image of a multi-platform index; nil means
	// the host's (linux and its architecture).
	Platform *v1.Platform
}

// Pull brings the image ref names (a registry reference:
// registry/repository[:tag|@digest], defaulting to Docker Hub) into
// store, tagged ref, and returns it.
//
// See pull for how the image is chosen, checked and named.
func Pull(ctx context.Context, store *layerfs.Store, ref string, opts *PullOptions) (*layerfs.Image, error) {
	return pull(ctx, store, ref, opts)
}

// PushOptions configure Push.
type PushOptions struct {
	Options
}
