package layerfs

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Project quotas, as linux/quota.h, linux/dqblk_xfs.h and linux/fs.h
// define them; x/sys/unix has the system call numbers but not these.
const (
	prjQuota = 2 // PRJQUOTA

	qGetQuota   = 0x800007 // Q_GETQUOTA
	qSetQuota   = 0x800008 // Q_SETQUOTA
	qXGetQStatV = 'X'<<8 + 8

	qifBLimits = 1 // QIF_BLIMITS
	qifILimits = 4 // QIF_ILIMITS
	qifLimits  = qifBLimits | qifILimits
	// qifDQBlkSize is the unit of if_dqblk's block limits, whatever the
	// filesystem's block size.
	qifDQBlkSize = 1024

	fsQStatVVersion1 = 1
	fsQuotaUDQEnfd   = 1 << 1 // FS_QUOTA_UDQ_ENFD: user limits are enforced
	fsQuotaGDQEnfd   = 1 << 3 // FS_QUOTA_GDQ_ENFD: group limits are enforced
	fsQuotaPDQEnfd   = 1 << 5 // FS_QUOTA_PDQ_ENFD: project limits are enforced

	fsIOCFSGetXattr    = 0x801c581f // FS_IOC_FSGETXATTR
	fsIOCFSSetXattr    = 0x401c5820 // FS_IOC_FSSETXATTR
	fsXflagProjInherit = 0x200      // FS_XFLAG_PROJINHERIT
)

// qcmd is QCMD: a quotactl command for quotas of type typ.
func qcmd(cmd, typ uint32) uint32 { return cmd<<8 | typ }

// ifDQBlk is struct if_dqblk.
type ifDQBlk struct {
	BHardLimit, BSoftLimit, CurSpace  uint64
	IHardLimit, ISoftLimit, CurInodes uint64
	BTime, ITime                      uint64
	Valid                             uint32
	_                                 uint32
}

// fsQuotaStatV is struct fs_quota_statv.
type fsQuotaStatV struct {
	Version    int8
	_          uint8
	Flags      uint16
	InCoreDQs  uint32
	UQuota     fsQFileStatV
	GQuota     fsQFileStatV
	PQuota     fsQFileStatV
	BTimeLimit int32
	ITimeLimit int32
	RTBTime    int32
	Warn       [4]uint16
	_          uint32
	_          [7]uint64
}

// fsQFileStatV is struct fs_qfilestatv.
type fsQFileStatV struct {
	Ino      uint64
	NBlks    uint64
	NExtents uint32
	_        uint32
}

// fsxattr is struct fsxattr.
type fsxattr struct {
	XFlags, ExtSize, NExtents, ProjID, CoWExtSize uint32
	_                                             [8]byte
}

// quotactlAt runs quotactl_fd(2) (Linux 5.14) on the filesystem that path
// is on, which, unlike quotactl(2), needs no device node to name it.
func quotactlAt(path string, cmd, id uint32, addr unsafe.Pointer) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	_, _, errno := unix.Syscall6(unix.SYS_QUOTACTL_FD, uintptr(fd), uintptr(cmd), uintptr(id), uintptr(addr), 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// quotasEnforced reports whether the filesystem dir is on enforces project
// quotas, and whether it enforces quotas of any type; the kernel reports
// every type's state whichever it is asked about. Any failure to tell (a
// filesystem without quotas) means it does not, except that a kernel
// without quotactl_fd (before 5.14), which cannot tell, is taken to
// enforce some, so that rootfses are not mounted able to bypass them.
func quotasEnforced(dir string) (project, any bool) {
	st := fsQuotaStatV{Version: fsQStatVVersion1}
	if err := quotactlAt(dir, qcmd(qXGetQStatV, prjQuota), 0, unsafe.Pointer(&st)); err != nil {
		// ENOSYS also means no quota is on: ask with no descriptor, which
		// a kernel with the system call refuses with EBADF.
		_, _, errno := unix.Syscall6(unix.SYS_QUOTACTL_FD, ^uintptr(0), 0, 0, 0, 0, 0)
		return false, errno == unix.ENOSYS
	}
	return st.Flags&fsQuotaPDQEnfd != 0, st.Flags&(fsQuotaUDQEnfd|fsQuotaGDQEnfd|fsQuotaPDQEnfd) != 0
}

// projectInUse reports whether files on the filesystem of dir already
// carry project ID id, or it has limits: an administrator's, set before
// any file joins the project, which a rootfs's quota would overwrite and
// its Release clear. (A rootfs clears its own before its directory, and
// so its ID, is gone.)
func projectInUse(dir string, id uint32) (bool, error) {
	var q ifDQBlk
	err := quotactlAt(dir, qcmd(qGetQuota, prjQuota), id, unsafe.Pointer(&q))
	if err == unix.ENOENT {
		return false, nil // XFS: no quota record for id, so no files
	}
	if err != nil {
		return false, fmt.Errorf("read project quota %d: %w", id, err)
	}
	return q.CurSpace > 0 || q.CurInodes > 0 ||
		q.BHardLimit > 0 || q.BSoftLimit > 0 || q.IHardLimit > 0 || q.ISoftLimit > 0, nil
}

// setProjectQuota limits project q.Project on the filesystem of root to
// q's bytes and inodes, then puts the directory state, still empty, in
// that project, with the flag that makes everything created in it
// inherit it.
func setProjectQuota(root, state string, q *diskQuota) error {
	limits := ifDQBlk{
		BHardLimit: uint64(q.Bytes+qifDQBlkSize-1) / qifDQBlkSize,
		IHardLimit: uint64(q.Inodes),
		Valid:      qifLimits,
	}
	if err := quotactlAt(root, qcmd(qSetQuota, prjQuota), q.Project, unsafe.Pointer(&limits)); err != nil {
		return fmt.Errorf("set limits of project %d: %w", q.Project, err)
	}
	fd, err := unix.Open(state, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: state, Err: err}
	}
	defer unix.Close(fd)
	var attr fsxattr
	if err := ioctlPtr(fd, fsIOCFSGetXattr, unsafe.Pointer(&attr)); err != nil {
		return &os.PathError{Op: "FS_IOC_FSGETXATTR", Path: state, Err: err}
	}
	attr.ProjID = q.Project
	attr.XFlags |= fsXflagProjInherit
	if err := ioctlPtr(fd, fsIOCFSSetXattr, unsafe.Pointer(&attr)); err != nil {
		return &os.PathError{Op: "FS_IOC_FSSETXATTR", Path: state, Err: err}
	}
	return nil
}

// clearProjectQuota removes the limits of project id.
func clearProjectQuota(root string, id uint32) error {
	none := ifDQBlk{Valid: qifLimits}
	err := quotactlAt(root, qcmd(qSetQuota, prjQuota), id, unsafe.Pointer(&none))
	// ESRCH: project quotas were turned off since, limits and all.
	if err != nil && err != unix.ESRCH {
		return fmt.Errorf("clear limits of project %d: %w", id, err)
	}
	return nil
}

func ioctlPtr(fd int, req uint, arg unsafe.Pointer) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(arg))
	if errno != 0 {
		return errno
	}
	return nil
}
