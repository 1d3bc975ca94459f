package plugin

import "errors"

// Errors a plugin returns, and berth's callers test for with errors.Is.
// They keep their meaning across the wire: a plugin's Release that fails
// with an error wrapping ErrNotFound fails on the host with one that
// wraps ErrNotFound too (and layerfs.ErrNotFound or netplug.ErrNotFound,
// which berth's reclaim tests for).
var (
	ErrNotFound    = errors.New("not found")
	ErrExists      = errors.New("already exists")
	ErrUnsupported = errors.ErrUnsupported
	ErrInvalid     = errors.New("invalid request")
)

// Errors of the host's side.
var (
	// ErrNotPlugin: the program did not start as a berth plugin (no
	// handshake, a wrong magic cookie, a net/rpc plugin).
	ErrNotPlugin = errors.New("not a berth plugin")
	// ErrIncompatible: the plugin speaks another protocol version; the
	// error names both.
	ErrIncompatible = errors.New("incompatible plugin protocol")
	// ErrPluginExited: the plugin's process died, before or during the
	// call. The call is not retried (it may have done part of its work);
	// the next call starts the plugin again.
	ErrPluginExited = errors.New("plugin exited")
	// ErrChecksum: the binary is not the one Options.Checksum names.
	ErrChecksum = errors.New("plugin checksum mismatch")
	// ErrRefused: berth refused the plugin's answer (a mount outside its
	// roots, a relative path, another namespace's inode...): the error
	// names what and why, and berth undid what it could.
	ErrRefused = errors.New("plugin answer refused")
	// ErrWrongKind: a storage plugin opened as a network one, or the
	// other way round.
	ErrWrongKind = errors.New("wrong kind of plugin")
	// ErrClosed: the plugin was closed (its Close was called) before the
	// call.
	ErrClosed = errors.New("plugin closed")
)
