package netplug

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
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
	// One record per network, at a path known in advance: a look-up
	// each, not a scan of every attachment of every network, so that
	// berth ps asking for each of a thousand sandboxes stays linear.
	dir := filepath.Join(n.opts.RunDir, "attachments")
	nets, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []*Attachment
	for _, e := range nets {
		if !e.IsDir() {
			continue
		}
		p := filepath.Join(dir, e.Name(), id+".json")
		r, err := readRecord(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			// Being written: not an attachment to report yet.
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
