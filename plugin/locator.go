package plugin

import "path/filepath"

// Locator returns the absolute path of the plugin's binary. A sandbox
// records it (sandbox.Locatable) before it prepares a rootfs, so that
// berth gc, in another process, can start the plugin again to release a
// rootfs whose sandbox's process died.
func (s *Storage) Locator() string { return absPath(s.Info().Path) }

// Locator returns the absolute path of the plugin's binary. A sandbox
// records it (sandbox.Locatable) before it attaches, so that berth gc, in
// another process, can start the plugin again to detach a sandbox whose
// process died.
func (n *Network) Locator() string { return absPath(n.Info().Path) }

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}
