package sandbox

import (
	"context"
	"sync/atomic"
	"time"
)

// WhenEmpty says what starting a pool's sandbox does when the pool has
// none ready: the pool fills itself one sandbox at a time, so a burst of
// starts larger than its size, or faster than it builds, finds it empty.
type WhenEmpty int32

const (
	// BuildWhenEmpty builds a sandbox on the request path, as New's
	// would be. The default: a pool then never makes a start slower than
	// one without it, and no start waits on a filler that cannot build.
	BuildWhenEmpty WhenEmpty = iota
	// WaitWhenEmpty waits for the next sandbox the pool builds, until the
	// start's context (and Options.Timeout) ends: the machine then builds
	// one sandbox at a time however many starts wait, rather than as
	// many at once. If the pool fails to build one, the start builds its
	// own, whose error says what is wrong.
	WaitWhenEmpty
)

// PoolWarnInterval is the least time between two of a pool's warnings
// that it cannot keep up.
const PoolWarnInterval = 10 * time.Second

// PoolStats describes a pool's work since it was made. A pool keeps up
// when Misses stays small beside Hits. A start whose sandbox turns out to
// have died while it waited takes another, and counts once more.
type PoolStats struct {
	Size          int    // sandboxes the pool keeps ready
	Ready         int    // sandboxes ready now
	Hits          uint64 // starts that took a ready sandbox
	Misses        uint64 // starts that found none ready, and built one or waited (see WhenEmpty)
	Builds        uint64 // sandboxes built, by the pool or on a start's path
	BuildFailures uint64 // builds that failed
}

// poolCounters are PoolStats's counters.
type poolCounters struct {
	hits, misses, builds, buildFailures atomic.Uint64
}

// Stats returns the pool's statistics. It is safe to call at any time,
// as database/sql's DB.Stats is.
func (p *Pool) Stats() PoolStats {
	return PoolStats{
		Size:          cap(p.ready),
		Ready:         len(p.ready),
		Hits:          p.stats.hits.Load(),
		Misses:        p.stats.misses.Load(),
		Builds:        p.stats.builds.Load(),
		BuildFailures: p.stats.buildFailures.Load(),
	}
}

// SetWhenEmpty sets what starting a sandbox of the pool does when none is
// ready; BuildWhenEmpty until it is called. Starts under way keep what
// they chose.
func (p *Pool) SetWhenEmpty(w WhenEmpty) { p.whenEmpty.Store(int32(w)) }

// WhenEmpty returns what SetWhenEmpty set.
func (p *Pool) WhenEmpty() WhenEmpty { return WhenEmpty(p.whenEmpty.Load()) }

// missed counts a start that found the pool empty, and says so at Warn
// level, at most every PoolWarnInterval: a pool that cannot keep up
// costs its callers the time of a build, or of a wait, on every start.
func (p *Pool) missed() {
	misses := p.stats.misses.Add(1)
	now := time.Now().UnixNano()
	last := p.lastWarn.Load()
	if (last != 0 && now-last < int64(PoolWarnInterval)) || !p.lastWarn.CompareAndSwap(last, now) {
		return
	}
	then := "building one on the start's path"
	if p.WhenEmpty() == WaitWhenEmpty {
		then = "waiting for the next one built"
	}
	p.log.Warn("sandbox pool: no sandbox ready, the pool cannot keep up", "image", p.ref, "size", cap(p.ready),
		"hits", p.stats.hits.Load(), "misses", misses, "then", then)
}

// waitReady waits for the next sandbox the pool builds (WaitWhenEmpty).
// If the pool's filler has stopped short, it builds one, whose error says
// why.
func (p *Pool) waitReady(ctx context.Context) (*Sandbox, error) {
	p.kick()
	for {
		p.mu.Lock()
		err, failed := p.buildErr, p.failed
		p.mu.Unlock()
		if err != nil {
			return p.build(ctx)
		}
		select {
		case e := <-p.ready:
			// Other starts may wait behind this one: the filler, which
			// may have gone to sleep with the pool full an instant
			// before, builds the next now.
			p.kick()
			return e, nil
		case <-failed:
		case <-p.ctx.Done():
			return nil, ErrPoolClosed
		case <-ctx.Done():
			return nil, stoppedBeforeStart(ctx)
		}
	}
}

// poolUnsupported names the options o sets that a pool's sandbox does
// not take, though they are a sandbox's own: a name and labels are
// claimed and recorded when New's sandboxes are made, which a pool's
// are not; a Detachable sandbox's PID 1 must not die with the process
// that built it, as a pool's waiting ones do.
func poolUnsupported(o *Options) []string {
	var set []string
	if o.Name != "" {
		set = append(set, "Name")
	}
	if o.Labels != nil {
		set = append(set, "Labels")
	}
	if o.Detachable {
		set = append(set, "Detachable")
	}
	return set
}
