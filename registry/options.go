package registry

import (
	"context"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// keychain is where credentials come from: the caller's Keychain, or
// Docker's configuration file ($DOCKER_CONFIG/config.json, else
// ~/.docker/config.json) and the credential helpers it names.
func (o *Options) keychain() authn.Keychain {
	if o.Keychain != nil {
		return o.Keychain
	}
	if o.ConfigDir != "" {
		return configKeychain{dir: o.ConfigDir}
	}
	return authn.DefaultKeychain
}

// remoteOptions are the options of the remote package for talking to the
// registry of ref within ctx, under berth's transport rules.
func (o *Options) remoteOptions(ctx context.Context, ref name.Reference) []remote.Option {
	return []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(o.keychain()),
		remote.WithTransport(o.transport(ref.Context().Registry)),
		remote.WithUserAgent("berth"),
	}
}

// reporter calls a Progress callback from one goroutine at a time, as
// Options.Progress promises, whatever goroutines the transfer uses. A nil
// callback makes report a no-op.
type reporter struct {
	mu sync.Mutex
	fn func(Progress)
}

func newReporter(fn func(Progress)) *reporter { return &reporter{fn: fn} }

func (r *reporter) report(p Progress) {
	if r == nil || r.fn == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fn(p)
}
