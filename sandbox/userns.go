package sandbox

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/layerfs"
	"github.com/berth-dev/berth/sandbox/internal/nsinit"
	"github.com/berth-dev/berth/security"
)

// newUserNS makes a user namespace with u's mappings and returns it open.
// The rootfs is prepared for it before the sandbox's own namespace exists:
// an idmapped mount depends only on the mappings, which the two share.
func newUserNS(u *security.UserNamespace) (*os.File, error) {
	self, err := nsinit.SelfExe()
	if err != nil {
		return nil, err
	}
	cmd := &exec.Cmd{
		Path:       nsinit.ExecPath(3),
		Args:       []string{"berth-hold"},
		Env:        []string{nsinit.EnvMode + "=" + nsinit.ModeHold},
		ExtraFiles: []*os.File{self},
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags:  unix.CLONE_NEWUSER,
			UidMappings: idMaps(u.UIDMap),
			GidMappings: idMaps(u.GIDMap),
			Pdeathsig:   syscall.SIGKILL,
		},
	}
	hold, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("make a user namespace: %w", err)
	}
	ns, err := os.Open("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/ns/user")
	hold.Close()
	cmd.Wait()
	if err != nil {
		return nil, fmt.Errorf("open the user namespace: %w", err)
	}
	return ns, nil
}

// prepareOptions asks the storage for a rootfs that a sandbox in sec's user
// namespace sees with the image's owners; nil without a user namespace.
func prepareOptions(sec *security.Config) (*layerfs.PrepareOptions, error) {
	u := sec.UserNamespace
	if u == nil {
		return nil, nil
	}
	ns, err := newUserNS(u)
	if err != nil {
		return nil, err
	}
	return &layerfs.PrepareOptions{UserNS: ns, UIDMap: layerMaps(u.UIDMap), GIDMap: layerMaps(u.GIDMap)}, nil
}

func layerMaps(m []security.IDMap) []layerfs.IDMap {
	out := make([]layerfs.IDMap, len(m))
	for i, e := range m {
		out[i] = layerfs.IDMap{ContainerID: e.ContainerID, HostID: e.HostID, Size: e.Size}
	}
	return out
}
