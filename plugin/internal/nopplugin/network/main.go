// Command network is a network plugin that does as little as the
// protocol allows, so that timing it times the protocol: Attach records
// the id and reports an interface named eth0 with no address, and Detach
// forgets the id. It makes no interface: berth checks that the one
// reported is in the namespace, so the benchmarks that run it make eth0
// (a dummy link) in their namespace beforehand. It is not an example of a
// useful plugin.
package main

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/berth-dev/berth/netplug"
	"github.com/berth-dev/berth/plugin"
)

func main() { plugin.ServeNetwork(&nop{ids: map[string]bool{}}) }

type nop struct {
	mu  sync.Mutex
	ids map[string]bool
}

func (n *nop) Attach(_ context.Context, req *plugin.AttachRequest) (*plugin.AttachResult, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ids[req.ID] {
		return nil, fmt.Errorf("sandbox %q: %w", req.ID, plugin.ErrExists)
	}
	n.ids[req.ID] = true
	return &plugin.AttachResult{Attachment: netplug.Attachment{Network: "nop", Interface: "eth0"}}, nil
}

func (n *nop) Detach(_ context.Context, id, _ string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.ids[id] {
		return fmt.Errorf("sandbox %q: %w", id, plugin.ErrNotFound)
	}
	delete(n.ids, id)
	return nil
}

func (n *nop) List(context.Context) ([]string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	ids := make([]string, 0, len(n.ids))
	for id := range n.ids {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids, nil
}
