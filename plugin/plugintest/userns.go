package plugintest

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
)

// newUserNS makes a user namespace that maps container ids 0 to size-1
// to host ids from hostID on, for uids and gids, and returns it open. A
// process must live in it while its maps are written; the namespace then
// outlives the process for as long as the file is open.
func newUserNS(hostID, size uint32) (*os.File, error) {
	m := []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(hostID), Size: int(size)}}
	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: m,
		GidMappings: m,
		Pdeathsig:   syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("make a user namespace: %w", err)
	}
	ns, err := os.Open(fmt.Sprintf("/proc/%d/ns/user", cmd.Process.Pid))
	cmd.Process.Kill()
	cmd.Wait()
	if err != nil {
		return nil, fmt.Errorf("open the user namespace: %w", err)
	}
	return ns, nil
}
