package plugin

import (
	"context"
	"errors"
)

// Describe starts the plugin at path, reads its Info and stops it, for
// listings such as `berth plugin ls`. Unlike OpenStorage and OpenNetwork
// it takes a plugin of either kind.
func Describe(ctx context.Context, path string, opts *Options) (Info, error) {
	c, err := newClient(path, "", opts)
	if err != nil {
		return Info{}, err
	}
	_, err = c.conn(ctx)
	info := c.Info()
	return info, errors.Join(err, c.close())
}
