package netplug

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
)

// Attachments returns what netplug recorded of the sandbox id's
// attachments, one per network it is on, from the records alone: the
// network, addresses, gateway and published ports with the host ports
// that were chosen for them. It is how a program other than the one that
// attached a sandbox (berth port, berth inspect) learns where its ports
// went. Hosts and DNS are left empty: the sandbox's own files hold them.
func (n *Networks) Attachments(ctx context.Context, id string) ([]*Attachment, error) {
	if !idRE.MatchString(id) {
		return nil, fmt.Errorf("%w: sandbox ID %q", ErrInvalid, id)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	paths, err := filepath.Glob(filepath.Join(n.opts.RunDir, "attachments", "*", id+".json"))
	if err != nil {
		return nil, err
	}
	sort.Strings(paths)
	var out []*Attachment
	for _, p := range paths {
		r, err := readRecord(p)
		if err != nil {
			// Detached meanwhile, or being written: either way not an
			// attachment to report.
			n.log.Debug("skipping unreadable attachment record", "path", p, "err", err)
			continue
		}
		if r.ID != id {
			continue
		}
		out = append(out, &Attachment{
			Network:   r.Network,
			Interface: r.IfName,
			IPs:       slices.Clone(r.IPs),
			Gateway:   r.Gateway,
			Ports:     slices.Clone(r.Ports),
		})
	}
	return out, nil
}
