package main

import (
	"fmt"
	"strings"

	"github.com/berth-dev/berth/sandbox"
)

// parseDevice reads --device's HOST[:CONTAINER[:PERMS]], as docker run
// takes it; HOST:PERMS also works when PERMS is no path. The sandbox
// checks the paths and the permissions when it starts.
func parseDevice(s string) (sandbox.Device, error) {
	parts := strings.Split(s, ":")
	if parts[0] == "" || len(parts) > 3 {
		return sandbox.Device{}, fmt.Errorf("--device %q: want HOST[:CONTAINER[:PERMS]]", s)
	}
	d := sandbox.Device{Source: parts[0]}
	switch len(parts) {
	case 2:
		if isDevicePerms(parts[1]) {
			d.Access = parts[1]
		} else {
			d.Destination = parts[1]
		}
	case 3:
		d.Destination, d.Access = parts[1], parts[2]
		if d.Access == "" {
			return sandbox.Device{}, fmt.Errorf("--device %q: empty PERMS (want some of r, w and m)", s)
		}
	}
	return d, nil
}

// isDevicePerms reports whether s reads as permissions, not a path.
func isDevicePerms(s string) bool {
	return s != "" && strings.Trim(s, "rwm") == ""
}
