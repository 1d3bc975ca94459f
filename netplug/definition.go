package netplug

import "github.com/berth-dev/berth/internal/atomicfile"

// writeDefinition replaces the network definition at path with data.
// Definitions outlive reboots, so the write is durable: a power cut
// leaves the old definition or the new, never an empty or half-written
// one.
func writeDefinition(path string, data []byte) error {
	return atomicfile.WriteFile(path, data, 0o600)
}
