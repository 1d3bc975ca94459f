package registry

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/berth-dev/berth/layerfs"
)

// Errors a registry operation returns, beside layerfs's (ErrNotFound for
// an image the registry does not have, ErrDigestMismatch for a blob that
// is not what its digest says).
var (
	// ErrPlainHTTP means a request would have gone out over plain HTTP
	// to a registry (or a host it redirected to) that is neither on the
	// loopback interface nor marked Insecure. Nothing was sent.
	ErrPlainHTTP = errors.New("plain HTTP refused")
	// ErrNoPlatform means a multi-platform index has no image for the
	// platform asked for.
	ErrNoPlatform = errors.New("no image for the platform")
	// ErrUnsupportedManifest means the registry serves the image in a
	// form berth does not read, such as Docker's schema 1.
	ErrUnsupportedManifest = errors.New("unsupported manifest")
)

// notFound wraps err with layerfs.ErrNotFound when the registry said it
// has no such manifest, repository or blob, so that callers can tell a
// missing image from a failing registry.
func notFound(err error) error {
	var terr *transport.Error
	if !errors.As(err, &terr) {
		return err
	}
	if terr.StatusCode == http.StatusNotFound {
		return fmt.Errorf("%w: %w", layerfs.ErrNotFound, err)
	}
	for _, d := range terr.Errors {
		switch d.Code {
		case transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode, transport.BlobUnknownErrorCode:
			return fmt.Errorf("%w: %w", layerfs.ErrNotFound, err)
		}
	}
	return err
}
