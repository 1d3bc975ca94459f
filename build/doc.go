// Package build makes images from Dockerfiles: each RUN in a sandbox,
// each step a layer committed to a berth store, with a cache keyed by
// the parent image and the step (and, for COPY and ADD, the content of
// the files copied), so that an unchanged Dockerfile rebuilds at once.
package build
