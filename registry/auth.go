package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/docker/cli/cli/config"
	"github.com/docker/cli/cli/config/configfile"
	"github.com/docker/cli/cli/config/credentials"
	"github.com/docker/cli/cli/config/types"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/berth-dev/berth/internal/atomicfile"
)

var (
	// ErrUnauthorized means the registry refused the credentials given
	// (by Login) or found (by Pull and Push), or asked for some and
	// none were found.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrNotLoggedIn means Logout found no credentials for the server.
	// Docker reports it as a message, not a failure; a caller may too.
	ErrNotLoggedIn = errors.New("not logged in")
)

// unauthorized wraps err with ErrUnauthorized when the registry refused
// the request for want of credentials.
func unauthorized(err error) error {
	var terr *transport.Error
	if !errors.As(err, &terr) {
		return err
	}
	if terr.StatusCode == http.StatusUnauthorized {
		return fmt.Errorf("%w: %w", ErrUnauthorized, err)
	}
	for _, d := range terr.Errors {
		if d.Code == transport.UnauthorizedErrorCode || d.Code == transport.DeniedErrorCode {
			return fmt.Errorf("%w: %w", ErrUnauthorized, err)
		}
	}
	return err
}

// dockerHubKey is the key Docker files Docker Hub's credentials under.
const dockerHubKey = "https://index.docker.io/v1/"

// server is a registry as Login and Logout name it: its host and the key
// its credentials are filed under in config.json.
type server struct {
	host string // host[:port], index.docker.io for Docker Hub
	key  string // host[:port], dockerHubKey for Docker Hub
}

// parseServer reads what a user names a registry by: a host[:port], or a
// URL (https://host/v2/) as older Docker configurations have them. Empty,
// docker.io, index.docker.io and registry-1.docker.io all mean Docker
// Hub.
func parseServer(s string) (server, error) {
	host := credentials.ConvertToHostname(strings.TrimSpace(s))
	switch strings.ToLower(host) {
	case "", "docker.io", "index.docker.io", "registry-1.docker.io":
		return server{host: name.DefaultRegistry, key: dockerHubKey}, nil
	}
	if _, err := name.NewRegistry(host, name.StrictValidation); err != nil {
		return server{}, fmt.Errorf("registry %q: %w", s, err)
	}
	return server{host: host, key: host}, nil
}

// configDir is where Docker's config.json is: dir, else $DOCKER_CONFIG,
// else ~/.docker. It is worked out on every call (unlike docker/cli's
// config.Dir, which fixes it once per process).
func configDir(dir string) (string, error) {
	if dir != "" {
		return dir, nil
	}
	if d := os.Getenv(config.EnvOverrideConfigDir); d != "" {
		return d, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("docker configuration: %w", err)
	}
	return filepath.Join(home, ".docker"), nil
}

// loadConfig reads config.json from dir (see configDir). A file that is
// there but does not parse is an error, so that it is never overwritten
// with what little could be read of it.
func loadConfig(dir string) (*configFile, error) {
	d, err := configDir(dir)
	if err != nil {
		return nil, err
	}
	cf, err := config.Load(d)
	if err != nil {
		return nil, err
	}
	return &configFile{cf}, nil
}

// configFile is Docker's configuration file, saved as berth wants it:
// with mode 0600 whatever mode it had, durably and atomically (written
// beside and renamed over, through a symlink at its name as Docker does),
// keeping its owner.
type configFile struct {
	*configfile.ConfigFile
}

// Save replaces docker/cli's, which keeps an existing file's mode (a
// config.json made 0644 by some tool would then hold passwords others
// can read), does not sync, and writes a warning on standard error.
func (c *configFile) Save() error {
	var buf bytes.Buffer
	if err := c.SaveToWriter(&buf); err != nil {
		return err
	}
	target := c.Filename
	if fi, err := os.Lstat(target); err == nil && fi.Mode()&os.ModeSymlink != 0 {
		// Docker writes through a symlink at config.json (dotfile
		// managers make them). Only through one of the caller's own:
		// a link someone else planted in a directory they can write
		// would have root's login replace any file it names.
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
			return fmt.Errorf("%s is a symlink owned by uid %d, not this user; refusing to write credentials through it", target, st.Uid)
		}
	}
	if t, err := filepath.EvalSymlinks(target); err == nil {
		target = t
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	var owner *syscall.Stat_t
	if fi, err := os.Stat(target); err == nil {
		owner, _ = fi.Sys().(*syscall.Stat_t)
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o700); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(target, buf.Bytes(), 0o600); err != nil {
		return err
	}
	if owner != nil && (int(owner.Uid) != os.Getuid() || int(owner.Gid) != os.Getgid()) {
		if err := os.Lchown(target, int(owner.Uid), int(owner.Gid)); err != nil {
			return fmt.Errorf("keep the owner of %s: %w", target, err)
		}
	}
	return nil
}

// credentialsStore returns where the credentials for key are kept: the
// credential helper config.json names for it (credHelpers), else its
// default helper (credsStore), else the file itself.
func (c *configFile) credentialsStore(key string) (store credentials.Store, helper string) {
	helper = c.CredentialsStore
	if h, ok := c.CredentialHelpers[key]; ok {
		helper = h
	}
	if helper != "" {
		return credentials.NewNativeStore(c, helper), helper
	}
	return plainStore{c}, ""
}

// plainStore keeps credentials in config.json itself, as docker/cli's
// file store does, but without writing to standard error.
type plainStore struct{ c *configFile }

func (s plainStore) Erase(key string) error {
	if _, ok := s.c.AuthConfigs[key]; !ok {
		return nil
	}
	delete(s.c.AuthConfigs, key)
	return s.c.Save()
}

func (s plainStore) Get(key string) (types.AuthConfig, error) {
	return s.c.AuthConfigs[key], nil
}

func (s plainStore) GetAll() (map[string]types.AuthConfig, error) {
	return s.c.AuthConfigs, nil
}

func (s plainStore) Store(ac types.AuthConfig) error {
	if s.c.AuthConfigs == nil {
		s.c.AuthConfigs = map[string]types.AuthConfig{}
	}
	s.c.AuthConfigs[ac.ServerAddress] = ac
	return s.c.Save()
}

// configKeychain finds credentials in the config.json of one directory
// (Options.ConfigDir) and the helpers it names, as authn.DefaultKeychain
// does in Docker's default place.
type configKeychain struct{ dir string }

func (k configKeychain) Resolve(target authn.Resource) (authn.Authenticator, error) {
	return k.ResolveContext(context.Background(), target)
}

func (k configKeychain) ResolveContext(_ context.Context, target authn.Resource) (authn.Authenticator, error) {
	cf, err := loadConfig(k.dir)
	if err != nil {
		return nil, err
	}
	for _, key := range []string{target.String(), target.RegistryStr()} {
		if key == name.DefaultRegistry {
			key = dockerHubKey
		}
		ac, err := cf.GetAuthConfig(key)
		if err != nil {
			return nil, err
		}
		if ac.Username != "" || ac.Password != "" || ac.Auth != "" || ac.IdentityToken != "" || ac.RegistryToken != "" {
			return authn.FromConfig(authn.AuthConfig{
				Username:      ac.Username,
				Password:      ac.Password,
				Auth:          ac.Auth,
				IdentityToken: ac.IdentityToken,
				RegistryToken: ac.RegistryToken,
			}), nil
		}
	}
	return authn.Anonymous, nil
}
