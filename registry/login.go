package registry

import (
	"context"
	"fmt"
	"net/http"

	"github.com/docker/cli/cli/config/types"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Login checks username and password against the registry server
// (host[:port]; empty or docker.io for Docker Hub) and, if it accepts
// them, keeps them where Docker does: in the credential helper that
// config.json names for the server (credHelpers, credsStore), else in
// config.json itself, under opts.ConfigDir ($DOCKER_CONFIG, else
// ~/.docker). config.json is written with mode 0600, atomically.
//
// Credentials the registry refuses are an error wrapping ErrUnauthorized,
// and nothing is written. No error or log message holds the password.
func Login(ctx context.Context, serverName, username, password string, opts *Options) error {
	if opts == nil {
		opts = &Options{}
	}
	srv, err := parseServer(serverName)
	if err != nil {
		return fmt.Errorf("login: %w", err)
	}
	if username == "" || password == "" {
		return fmt.Errorf("login to %s: %w: a username and a password are needed", srv.host, ErrUnauthorized)
	}
	// Read the configuration before asking the registry, so that a file
	// that does not parse fails the login before anything is sent.
	cf, err := loadConfig(opts.ConfigDir)
	if err != nil {
		return fmt.Errorf("login to %s: %w", srv.host, err)
	}
	if err := verifyLogin(ctx, srv, username, password, opts); err != nil {
		return fmt.Errorf("login to %s: %w", srv.host, err)
	}
	store, helper := cf.credentialsStore(srv.key)
	if err := store.Store(types.AuthConfig{Username: username, Password: password, ServerAddress: srv.key}); err != nil {
		if helper != "" {
			return fmt.Errorf("login to %s: credential helper docker-credential-%s: %w", srv.host, helper, err)
		}
		return fmt.Errorf("login to %s: %w", srv.host, err)
	}
	return nil
}

// verifyLogin asks the registry whether it takes the credentials: the
// authentication handshake (a token for no particular repository, where
// the registry hands out tokens), then GET /v2/ with them, which needs no
// permission beyond being who one says.
func verifyLogin(ctx context.Context, srv server, username, password string, opts *Options) error {
	var nopts []name.Option
	if opts.Insecure {
		nopts = append(nopts, name.Insecure)
	}
	reg, err := name.NewRegistry(srv.host, nopts...)
	if err != nil {
		return err
	}
	auth := authn.FromConfig(authn.AuthConfig{Username: username, Password: password})
	rt, err := transport.NewWithContext(ctx, reg, auth, opts.transport(reg), nil)
	if err != nil {
		return unauthorized(err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, reg.Scheme()+"://"+reg.RegistryStr()+"/v2/", nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: rt}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := transport.CheckError(resp, http.StatusOK); err != nil {
		return unauthorized(err)
	}
	return nil
}

// Logout erases the credentials kept for the registry server (see
// Login), from its credential helper or from config.json, along with
// entries older Docker versions filed under a URL for the same server
// (https://server/v1/). A server with no credentials is an error wrapping
// ErrNotLoggedIn, which a command may report as Docker does, as a
// message rather than a failure.
func Logout(serverName string, opts *Options) error {
	if opts == nil {
		opts = &Options{}
	}
	srv, err := parseServer(serverName)
	if err != nil {
		return fmt.Errorf("logout: %w", err)
	}
	cf, err := loadConfig(opts.ConfigDir)
	if err != nil {
		return fmt.Errorf("logout of %s: %w", srv.host, err)
	}
	store, helper := cf.credentialsStore(srv.key)
	var keys []string
	for k := range cf.AuthConfigs {
		if k == srv.key {
			continue
		}
		if other, err := parseServer(k); err == nil && other.key == srv.key {
			keys = append(keys, k)
		}
	}
	_, inFile := cf.AuthConfigs[srv.key]
	if !inFile && len(keys) == 0 {
		// A helper may hold credentials that config.json does not
		// mention (stored by another tool).
		ac, err := store.Get(srv.key)
		if err != nil || ac.Username == "" && ac.Password == "" && ac.IdentityToken == "" {
			return fmt.Errorf("logout of %s: %w", srv.host, ErrNotLoggedIn)
		}
	}
	if len(keys) > 0 {
		for _, k := range keys {
			delete(cf.AuthConfigs, k)
		}
		if err := cf.Save(); err != nil {
			return fmt.Errorf("logout of %s: %w", srv.host, err)
		}
	}
	if err := store.Erase(srv.key); err != nil {
		if helper != "" {
			return fmt.Errorf("logout of %s: credential helper docker-credential-%s: %w", srv.host, helper, err)
		}
		return fmt.Errorf("logout of %s: %w", srv.host, err)
	}
	return nil
}
