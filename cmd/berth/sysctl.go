package main

import (
	"fmt"
	"strings"
)

// parseSysctls turns --sysctl KEY=VALUE flags into a map. The sandbox
// checks that each key belongs to one of its own namespaces.
func parseSysctls(flags []string) (map[string]string, error) {
	if len(flags) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(flags))
	for _, f := range flags {
		k, v, ok := strings.Cut(f, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("--sysctl %q: want KEY=VALUE", f)
		}
		out[k] = v
	}
	return out, nil
}
