package sandbox

import (
	"context"
	"errors"
	"io"
)

// CopyTo copies the host file or directory hostPath into the sandbox at
// sandboxPath, as `cp -a` would, resolving sandboxPath inside the
// sandbox's root: a symbolic link the workload planted is followed only
// within the sandbox, never to the host.
func (s *Sandbox) CopyTo(ctx context.Context, hostPath, sandboxPath string) error {
	return errors.ErrUnsupported // day-0 contract
}

// CopyFrom copies the file or directory sandboxPath, resolved inside the
// sandbox's root, to hostPath on the host. Symbolic links are copied as
// links, never followed out of the sandbox.
func (s *Sandbox) CopyFrom(ctx context.Context, sandboxPath, hostPath string) error {
	return errors.ErrUnsupported // day-0 contract
}

// CopyToTar unpacks the tar stream r into the directory sandboxDir inside
// the sandbox, resolved as CopyTo resolves its destination.
func (s *Sandbox) CopyToTar(ctx context.Context, r io.Reader, sandboxDir string) error {
	return errors.ErrUnsupported // day-0 contract
}

// CopyFromTar writes sandboxPath, resolved inside the sandbox's root, to w
// as a tar stream whose entries are named after sandboxPath's last element.
func (s *Sandbox) CopyFromTar(ctx context.Context, sandboxPath string, w io.Writer) error {
	return errors.ErrUnsupported // day-0 contract
}
