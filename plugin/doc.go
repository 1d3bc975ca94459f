// Package plugin runs berth's storage and network backends out of
// process, as plugins: programs that hashicorp/go-plugin starts and that
// serve berth's protocol (plugin/proto) over gRPC on a private socket.
//
// A plugin's author implements StoragePlugin or NetworkPlugin and calls
// ServeStorage or ServeNetwork from main. The host opens the plugin with
// OpenStorage or OpenNetwork, whose values satisfy sandbox.Storage and
// sandbox.Network, so a plugin and a built-in backend are interchangeable.
//
// A storage plugin answers with mounts; berth checks them (sources under
// the plugin's roots, a short list of types and options, nosuid and nodev
// always) and performs them itself, so the plugin never enters a sandbox.
// A network plugin is given the sandbox's network namespace by path and
// identity, and berth checks what it says it did against the namespace.
// What a plugin is trusted with is in SECURITY.md.
//
// # The plugin's process
//
// berth starts a plugin itself, not through a shell: by absolute path,
// with /dev/null as stdin, / as working directory, a process group of its
// own, none of berth's descriptors and not berth's environment (PATH,
// go-plugin's handshake variables and Options.Env only; to keep a
// descriptor some library opened without O_CLOEXEC from leaking into the
// plugin, each start marks every descriptor of the host process from 3
// up close-on-exec, so a program embedding berth that means a child of
// its own to inherit one must clear that flag itself). The plugin's
// socket lives in a private directory under Options.RunDir, and the
// kernel kills the plugin if berth dies. One process serves all of a
// host value's calls, from many goroutines at once. When it dies, the
// calls in flight fail with ErrPluginExited (never retried: they may
// have done part of their work) and the next call starts it again.
//
// # Errors and logs
//
// An error a plugin returns keeps its meaning on the host: wrap
// ErrNotFound, ErrExists, ErrUnsupported or ErrInvalid and the host's
// errors.Is finds it; a call's context error comes back as itself. A
// plugin logs through Logger, whose records reach the host's
// Options.Logger with their level and attributes and a plugin attribute
// naming the plugin. plugin/proto/README.md describes the wire format
// for plugins written in other languages.
package plugin
