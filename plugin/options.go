package plugin

import (
	"log/slog"
	"time"

	"github.com/berth-dev/berth/layerfs"
)

// Options configure how the host starts and talks to a plugin. The zero
// value is usable.
type Options struct {
	// Logger receives berth's messages about the plugin and the plugin's
	// own log lines (the JSON lines it writes to stderr), each with a
	// plugin attribute naming it; nil discards them.
	Logger *slog.Logger
	// Checksum, if set, is the SHA-256 of the plugin's binary: berth
	// refuses to start a binary with another (ErrChecksum), so a plugin
	// replaced on disk is not run. berth hashes the binary and executes
	// the very file it hashed, so a checksummed plugin cannot be a
	// script.
	Checksum []byte
	// AutoMTLS, if set, makes the host and the plugin authenticate each
	// other with certificates made for this one start. The socket is in a
	// directory only root can enter, so it is off by default: it adds
	// tens of milliseconds to each start (two P-521 keys), and a plugin
	// not written in Go must then implement go-plugin's certificate
	// exchange (plugin/proto/README.md).
	AutoMTLS bool
	// Env is added to the plugin's environment, as KEY=VALUE entries.
	// A plugin does not get berth's environment, which may hold
	// credentials it has no business with: only PATH, the log level
	// berth keeps (BERTH_PLUGIN_LOG_LEVEL), go-plugin's handshake
	// variables and Env, which may not set any of those.
	Env []string
	// StartTimeout bounds a start of the plugin, from exec to its answer
	// to Info, when the caller's context does not end sooner; 0 means
	// 30s.
	StartTimeout time.Duration
	// RunDir is the directory the plugins' sockets are made in, one
	// private directory per start, removed when the process is stopped or
	// replaced; empty means /run/berth/plugins. It must belong to berth's
	// user and be writable by no one else.
	RunDir string
	// Store (storage plugins) resolves images, keeps volumes and is where
	// the layers a plugin is given live; nil opens the default store.
	Store *layerfs.Store
	// MountDir (storage plugins) is where berth mounts the rootfses a
	// plugin prepares; empty means /run/berth/plugin-rootfs.
	MountDir string
	// Settings are sent to the plugin in every Prepare's or Attach's
	// options (the plugin's own settings, e.g. a tmpfs size).
	Settings map[string]string
}
