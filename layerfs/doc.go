// Package layerfs stores OCI images on local disk and turns them into
// root filesystems for sandboxes.
//
// A Store keeps every blob (manifest, config, compressed layer) once, by
// digest, exactly as it was imported, so that exporting an image reproduces
// the same digests. Each layer is also unpacked once, keyed by its
// uncompressed digest (its diff ID), into a directory in overlayfs format:
// OCI whiteouts become overlay whiteouts (or stay OCI .wh. files where the
// filesystem refuses overlay's, as overlayfs itself does). Images that
// share layers share both the blobs and the unpacked directories.
//
// Prepare stacks an image's unpacked layers under a private writable
// directory (an overlay mount, or a full copy where overlayfs cannot be
// used) and Release undoes it. Diff and Commit turn what a sandbox changed
// back into an OCI layer and a new image on top of the old one.
//
// A Store is safe for concurrent use by many goroutines and by many
// processes sharing the same root directory. Every write is staged in a
// private temporary directory and published with an atomic rename, so an
// import killed at any point leaves nothing half-written in view.
package layerfs
