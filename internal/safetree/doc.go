// Package safetree copies file trees between directories and tar streams
// when either side may belong to someone hostile: a sandbox's workload,
// which can rewrite its tree at any moment, or a tar stream it made.
//
// Nothing here looks a path up from "/". Every name is resolved from a
// directory descriptor the caller pinned: inside a root as if it were "/"
// (InRoot, openat2 RESOLVE_IN_ROOT), or beneath a directory without
// following any symbolic link (Beneath). Entries are read through
// descriptors checked with fstat before they are opened for reading, so a
// FIFO or a device is never opened, and written under temporary names
// renamed over their final ones, so that a link someone planted at a name
// is replaced, never written through. A tree changed while it is copied
// can make the copy fail or copy a mix of old and new; it cannot make it
// read or write anything outside the two directories.
package safetree
