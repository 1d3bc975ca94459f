// Package registry moves images between a berth store and OCI registries:
// Pull brings an image in, Push sends one out, Login and Logout keep
// credentials where Docker keeps them (~/.docker/config.json, or
// $DOCKER_CONFIG, and the credential helpers that file names).
//
// Registries speak HTTPS. Plain HTTP is used only for registries on the
// loopback interface (localhost, 127.0.0.0/8, ::1) and for those a caller
// marks Insecure.
package registry
