// Package build makes images from Dockerfiles: each RUN in a sandbox,
// each step a layer committed to a berth store, with a cache keyed by
// the parent image and the step (and, for COPY and ADD, the content of
// the files copied), so that an unchanged Dockerfile rebuilds at once.
//
// Dockerfiles are parsed by buildkit's own parser, so their syntax is
// Docker's. FROM (stages, scratch, an image of the store: Build pulls
// nothing), RUN, COPY (--from, --chown, --chmod), ADD of local files and
// archives, ENV, ARG, WORKDIR, USER, CMD, ENTRYPOINT, EXPOSE, LABEL,
// STOPSIGNAL, HEALTHCHECK, SHELL, VOLUME and MAINTAINER (as a label) are
// carried out; anything else is an error naming its line that
// errors.Is ErrUnsupported: ONBUILD, ADD of a URL or a git repository,
// RUN --mount/--network/--security, here-documents, COPY --link,
// --parents and --exclude, FROM --platform.
//
// # What a build reads
//
// The context may be anyone's. Every path in it is opened with
// openat2(RESOLVE_IN_ROOT) on a descriptor of the context directory, so
// a symbolic link, planted beforehand or swapped in during the build,
// resolves as if the context were "/" and never reaches the host's
// files. A source named by a COPY is followed inside the context; links
// found inside a copied directory are copied as links. Absolute sources
// are taken from the context's root, as Docker takes them; a source
// that climbs out with ".." is an error (ErrOutsideContext). Files are
// read only if they are regular: a FIFO named as a source is refused (a
// FIFO inside a directory is copied as a FIFO, never opened), device
// nodes are refused and sockets left out. A file replaced between its
// listing and its read fails the build. Hard links are copied as
// separate files. .dockerignore follows Docker's rules
// (moby/patternmatcher); the Dockerfile and .dockerignore are files of
// the context like any other unless it ignores them.
//
// # Where COPY puts files
//
// As Docker does: into the directory the destination names if the image
// has one, through the image's own links (resolved inside the image's
// root, so a link there cannot name a host path), creating missing
// parents 0755 owned by the --chown user. Directories the image has keep
// their mode and owner. Entries are sorted, their times zeroed and their
// owners 0:0 unless --chown says otherwise, so that the same files make
// the same layer. ADD unpacks plain, gzip, bzip2 and zstd tar archives
// (xz is not supported), keeping their entries' owners and times, with
// names confined under the destination; anything else is copied as a
// file. A destination that is a dangling link in the image is followed,
// inside the image, to where its target would be.
//
// # The cache
//
// Each step's key is a SHA-256 of the parent image's digest, the
// instruction as written, the build arguments in effect and, for COPY
// and ADD, the digest of the tar of what is copied (names, modes,
// owners, contents). Keys map to image digests in files under
// <store>/build-cache. Intermediate images are ordinary untagged images:
// store.GC keeps every image, tagged or not, so the cache never makes GC
// remove something in use, and an image removed (berth image rm) only
// turns its entry into a miss. NoCache runs every step, and records its
// results for later builds.
package build
