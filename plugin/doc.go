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
package plugin
