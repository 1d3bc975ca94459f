// Command testnetwork is the network plugin of the plugin package's
// tests. It really connects a namespace, with a veth pair per sandbox (the
// host's end named after the id, so that Detach needs nothing but the id,
// even from a restarted process), and it can misbehave on request, so
// that the tests see berth refuse what a buggy or hostile plugin says.
//
// Started under a name with "raw" in it (a hard link of the binary), it
// serves the protocol itself, without the SDK's glue, as a plugin written
// in another language would: only then can its answers be malformed at
// the wire level. Under a name with "nocaps" in it, it announces neither
// ports nor dns. Each Attach's "lie" option chooses how it misbehaves:
//
//	raw:  ino       echo another namespace's inode
//	      garbage   an address that is not one
//	      loopback  report 127.0.0.1/8
//	      noaddr    report an address that is not on the interface
//	      noif      report an interface that does not exist
//	      hostsnl   a hosts entry name with a line break in it
//	      ports     publish a port that was not asked for
//	      netname   a network name with a line break in it
//	      dns       a search domain with a line break in it
//	SDK:  otherns   leave the sandbox's end in the host's namespace
//	      hang      connect, then never answer, whatever the context
//	      block     connect, write the pid to the file named by option
//	                "ready" (unless it exists), then wait to be killed
package main

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/berth-dev/berth/plugin"
)

func main() {
	v := &veths{}
	name := filepath.Base(os.Args[0])
	if strings.Contains(name, "raw") {
		serveRaw(v)
		return
	}
	plugin.ServeNetwork(&sdkNetwork{v: v, caps: !strings.Contains(name, "nocaps")})
}
