package plugin

import (
	"context"
	"errors"

	"google.golang.org/grpc"

	"github.com/berth-dev/berth/layerfs"
)

// Storage is a storage plugin seen from the host: it satisfies
// sandbox.Storage. Images and volumes are the store's (Options.Store);
// rootfses are the plugin's, mounted by berth.
//
// DAY-0 SKELETON: the methods are to come.
type Storage struct {
	c     *client
	store *layerfs.Store
}

// OpenStorage starts the storage plugin at path and returns it ready for
// sandboxes. Close stops it.
func OpenStorage(ctx context.Context, path string, opts *Options) (*Storage, error) {
	c, err := startClient(ctx, path, KindStorage, opts)
	if err != nil {
		return nil, err
	}
	return &Storage{c: c}, nil
}

// Info describes the plugin.
func (s *Storage) Info() Info { return s.c.Info() }

// Image resolves ref in the store.
func (s *Storage) Image(ctx context.Context, ref string) (*layerfs.Image, error) {
	return nil, errors.ErrUnsupported
}

// Prepare asks the plugin for a rootfs for key, checks its answer and
// mounts it.
func (s *Storage) Prepare(ctx context.Context, key string, img *layerfs.Image, opts *layerfs.PrepareOptions) (*layerfs.Rootfs, error) {
	return nil, errors.ErrUnsupported
}

// Release unmounts key's rootfs and has the plugin free it.
func (s *Storage) Release(ctx context.Context, key string) error {
	return errors.ErrUnsupported
}

// Rootfses lists the keys the plugin holds, for Recover.
func (s *Storage) Rootfses(ctx context.Context) ([]string, error) {
	return nil, errors.ErrUnsupported
}

// Close stops the plugin; the rootfses it made stay.
func (s *Storage) Close() error { return s.c.close() }

// registerStorage registers impl's StorageService on s.
func registerStorage(s *grpc.Server, impl StoragePlugin) {}
