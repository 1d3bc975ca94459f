package registry

import (
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/berth-dev/berth/layerfs"
)

// dockerHub is the registry that names without one (busybox, library/x)
// live on, as Docker has it.
const dockerHub = name.DefaultRegistry

// parseReference parses s, a registry reference, into the form the
// remote package takes. The store's grammar (layerfs.ParseReference,
// with its bound on length) applies first, so that whatever is pulled can
// be named in the store. Insecure lets the remote package use plain HTTP
// for the registry; berth's transport decides whether it may.
func parseReference(s string, insecure bool) (name.Reference, error) {
	if _, err := layerfs.ParseReference(s); err != nil {
		return nil, err
	}
	// Weak validation is what fills in Docker Hub and the tag latest;
	// the store's grammar is the stricter one.
	var opts []name.Option
	if insecure {
		opts = append(opts, name.Insecure)
	}
	ref, err := name.ParseReference(s, opts...)
	if err != nil {
		return nil, fmt.Errorf("%w %q: %v", layerfs.ErrInvalidReference, s, err)
	}
	return ref, nil
}

// storeName is the name the store gives an image ref names: the
// repository in the short form Docker shows (busybox for
// docker.io/library/busybox, team/app for docker.io/team/app, the full
// name elsewhere) with ref's tag. It is the name a user types for the
// image afterwards, and the one Push, given it, sends back to the same
// repository. A reference by digest alone gives no name: the store finds
// the image by its digest.
func storeName(ref name.Reference) string {
	tag, ok := ref.(name.Tag)
	if !ok {
		return ""
	}
	return familiarRepository(ref.Context()) + ":" + tag.TagStr()
}

// familiarRepository is repo's name as Docker shows it.
func familiarRepository(repo name.Repository) string {
	r := repo.RepositoryStr()
	if repo.RegistryStr() != dockerHub {
		return repo.RegistryStr() + "/" + r
	}
	return strings.TrimPrefix(r, "library/")
}
