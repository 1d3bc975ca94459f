package layerfs

import "errors"

// Errors returned by the store. Callers test for them with errors.Is; the
// returned errors wrap them with the name of what was wrong.
var (
	// ErrNotFound means no image, blob or rootfs matches the given name.
	ErrNotFound = errors.New("not found")
	// ErrInvalidReference means an image reference does not parse.
	ErrInvalidReference = errors.New("invalid image reference")
	// ErrUnsafeEntry means a layer holds an entry that would be written
	// outside the layer (an absolute path, "..", a path through a symlink
	// that leaves the layer) or that would subvert overlayfs.
	ErrUnsafeEntry = errors.New("unsafe layer entry")
	// ErrDigestMismatch means content does not hash to the digest that a
	// manifest, config or index promised for it.
	ErrDigestMismatch = errors.New("digest mismatch")
	// ErrUnknownFormat means an import source is none of the formats the
	// store reads.
	ErrUnknownFormat = errors.New("unknown image format")
	// ErrExists means a rootfs with the requested key is already prepared.
	ErrExists = errors.New("already exists")
	// ErrAmbiguous means a short digest prefix matches more than one image.
	ErrAmbiguous = errors.New("ambiguous image reference")
	// ErrIDMapUnsupported means the kernel, or the filesystem the layers
	// are on, cannot make the idmapped mounts that the overlay driver
	// shows layers to a user namespace through. Prepare does not return
	// it: it copies the image with shifted owners instead.
	ErrIDMapUnsupported = errors.New("idmapped mounts not supported")
)
