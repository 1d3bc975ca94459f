// Command infoplugin is a network plugin that connects nothing: the
// discovery tests list it, to see what a plugin says of itself.
package main

import (
	"context"

	"github.com/berth-dev/berth/plugin"
)

type nothing struct{}

func (nothing) Attach(context.Context, *plugin.AttachRequest) (*plugin.AttachResult, error) {
	return nil, plugin.ErrUnsupported
}
func (nothing) Detach(context.Context, string, string) error { return plugin.ErrNotFound }
func (nothing) List(context.Context) ([]string, error)       { return nil, nil }
func (nothing) PublishesPorts() bool                         { return true }

func main() { plugin.ServeNetwork(nothing{}) }
