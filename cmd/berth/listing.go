package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/clip"
	"github.com/berth-dev/berth/netplug"
	"github.com/berth-dev/berth/sandbox"
)

// A listed sandbox is what ps, inspect, port, top, stats and logs know of
// one entry of the state directory: a detached container (live or
// exited, from its record) or a foreground sandbox (from the sandbox's
// own record). Its fields are what the commands print; none of them is
// trusted for anything but printing.
type listed struct {
	ID        string // the container's ID, or the sandbox's
	SandboxID string // the live sandbox's ID; empty when none runs
	Name      string
	Image     string
	// Command is the command line PID 1 runs (ran), the entrypoint
	// included, as ps shows it; Args are the arguments given after the
	// image, which replaced its Cmd.
	Command []string
	Args    []string
	Labels  map[string]string
	Created time.Time
	// State is Docker's: "created", "running", "restarting", "exited"
	// or "dead" (a sandbox whose owner died, or whose record is
	// damaged, until berth gc reclaims it).
	State        string
	Detached     bool
	ExitCode     int
	Started      time.Time
	Finished     time.Time
	RestartCount int
	Ports        []netplug.PortMapping
	Log          string // the supervisor's log, for a detached sandbox
	Exit         string // the supervisor's exit record
	// Sandbox is the live sandbox's record, if there is one; Last, a
	// detached container's last sandbox's, kept after it has gone.
	Sandbox *sandbox.State
	Last    *sandbox.State
	// Problem says what is wrong with an entry whose record is damaged.
	Problem string
	// Error says why a container's last start, or its reaping, failed.
	Error string
}

// listAll returns every container and sandbox of the state directory,
// oldest first: the detached containers from their records, and the
// foreground sandboxes no container record claims.
func (g *globals) listAll(ctx context.Context) ([]*listed, error) {
	records, err := sandbox.ReadRecords(g.state)
	if err != nil {
		return nil, err
	}
	containers, err := listContainerViews(g.state)
	if err != nil {
		return nil, err
	}
	bySandbox := map[string]sandbox.Record{}
	for _, r := range records {
		bySandbox[r.ID] = r
	}
	var out []*listed
	claimed := map[string]bool{}
	for _, c := range containers {
		if r, ok := bySandbox[c.SandboxID]; ok && c.SandboxID != "" {
			claimed[r.ID] = true
			if r.State != nil && r.Owned && !r.State.Exited() {
				c.Sandbox = r.State
				c.State = "running"
				if r.State.Pending {
					c.State = "created"
				}
				if c.Started.IsZero() {
					c.Started = r.State.Created
				}
			}
		}
		if c.State == statusRunning && c.Sandbox == nil {
			// The record says running, but no live sandbox backs it: it
			// has just ended, and its reaper has yet to say so, or its
			// supervisor was killed.
			c.State = "dead"
			if e, err := readExit(g.state, c.ID); err == nil {
				c.State, c.ExitCode = "exited", e.ExitCode
				c.Finished, _ = time.Parse(time.RFC3339Nano, e.Exited)
			}
		}
		out = append(out, c)
	}
	for _, r := range records {
		if claimed[r.ID] {
			continue
		}
		out = append(out, fromRecord(r))
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// fromRecord describes a sandbox that no container record claims: one
// run in the foreground, or a detached one between its start and its
// record.
func fromRecord(r sandbox.Record) *listed {
	l := &listed{ID: r.ID, SandboxID: r.ID}
	st := r.State
	if st == nil {
		l.State = "dead"
		l.Problem = strings.TrimPrefix(r.Err.Error(), sandbox.ErrDamagedState.Error()+": ")
		if r.Owned {
			l.State = "created"
		}
		return l
	}
	l.Sandbox = st
	l.Name, l.Image, l.Labels, l.Created, l.Started = st.Name, st.Image, st.Labels, st.Created, st.Created
	l.Command, l.Args = st.Command, st.Args
	if len(l.Command) == 0 {
		l.Command = st.Args // an older berth's record, or a pool's sandbox not yet taken
	}
	l.Log = st.Log
	switch {
	case !r.Owned:
		l.State = "dead"
	case st.Pending:
		l.State = "created"
	case st.Exited():
		l.State = "exited"
	default:
		l.State = "running"
	}
	return l
}

// errNoSuchContainer is find's error for a name or ID that names nothing.
var errNoSuchContainer = errors.New("no such container or sandbox")

// find returns the entry nameOrID names: an exact name first, then an
// exact ID, then a unique ID prefix of at least 4 characters.
func (g *globals) find(ctx context.Context, nameOrID string) (*listed, error) {
	if nameOrID == "" {
		return nil, fmt.Errorf("%w: empty name", errNoSuchContainer)
	}
	all, err := g.listAll(ctx)
	if err != nil {
		return nil, err
	}
	for _, l := range all {
		if l.Name == nameOrID {
			return l, nil
		}
	}
	for _, l := range all {
		if l.ID == nameOrID || l.SandboxID == nameOrID {
			return l, nil
		}
	}
	var found *listed
	if len(nameOrID) >= 4 {
		for _, l := range all {
			if strings.HasPrefix(l.ID, nameOrID) || (l.SandboxID != "" && strings.HasPrefix(l.SandboxID, nameOrID)) {
				if found != nil && found != l {
					return nil, fmt.Errorf("%s: %w", clip.Quote(nameOrID), sandbox.ErrAmbiguousID)
				}
				found = l
			}
		}
	}
	if found == nil {
		return nil, fmt.Errorf("%s: %w", clip.Quote(nameOrID), errNoSuchContainer)
	}
	return found, nil
}

// findRunning is find for commands that need a live sandbox: it opens it.
func (g *globals) findRunning(ctx context.Context, nameOrID string) (*listed, *sandbox.Sandbox, error) {
	l, err := g.find(ctx, nameOrID)
	if err != nil {
		return nil, nil, err
	}
	if l.SandboxID == "" || l.State != "running" {
		return nil, nil, fmt.Errorf("%s: %w", clip.Quote(nameOrID), sandbox.ErrNotRunning)
	}
	opts, err := g.sandboxOptions()
	if err != nil {
		return nil, nil, err
	}
	sb, err := sandbox.Open(ctx, l.SandboxID, opts)
	if err != nil {
		return nil, nil, err
	}
	return l, sb, nil
}

// attachments returns the network attachments of the live sandbox id
// from netplug's records, which hold the host ports chosen for its
// published ports. A host that never used a network has none, and is
// not given netplug's directories by asking. netplug is opened once per
// command, not per sandbox listed.
func (g *globals) attachments(ctx context.Context, id string) ([]*netplug.Attachment, error) {
	if id == "" {
		return nil, nil
	}
	if g.attached == nil {
		if _, err := os.Stat(netplug.DefaultRunDir); err != nil {
			return nil, nil
		}
		nets, err := g.networks()
		if err != nil {
			return nil, err
		}
		g.attached = nets
	}
	return g.attached.Attachments(ctx, id)
}

// ports returns l's published ports, with their host ports: the live
// sandbox's from netplug, or those the container record kept. A sandbox
// that is not running publishes none, as Docker shows it.
func (g *globals) ports(ctx context.Context, l *listed) []netplug.PortMapping {
	if l.State != "running" {
		return nil
	}
	atts, _ := g.attachments(ctx, l.SandboxID)
	return publishedPorts(l, atts)
}

// publishedPorts is ports, given the attachments of l's live sandbox.
func publishedPorts(l *listed, atts []*netplug.Attachment) []netplug.PortMapping {
	if l.State != "running" {
		return nil
	}
	if len(atts) > 0 {
		var ps []netplug.PortMapping
		for _, a := range atts {
			ps = append(ps, a.Ports...)
		}
		return ps
	}
	return slices.Clone(l.Ports)
}

// formatPort is Docker's form of a published port: 127.0.0.1:32768->80/tcp.
func formatPort(p netplug.PortMapping) string {
	return fmt.Sprintf("%s->%d/%s", hostAddress(p), p.ContainerPort, protocol(p))
}
