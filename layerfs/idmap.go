package layerfs

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"

	"golang.org/x/sys/unix"
)

// IDMap maps a range of ids in a user namespace to host ids, as a line of
// /proc/<pid>/uid_map does: ContainerID+i is HostID+i for every i < Size.
type IDMap struct {
	ContainerID uint32 `json:"containerID"`
	HostID      uint32 `json:"hostID"`
	Size        uint32 `json:"size"`
}

// PrepareOptions tune Prepare. The zero value (or nil) prepares a rootfs
// for the host's own ids.
type PrepareOptions struct {
	// UserNS, if set, is an open user namespace (/proc/<pid>/ns/user)
	// whose mappings UIDMap and GIDMap describe. The rootfs then shows
	// every file owned by the host id its owner maps to: a file of the
	// image owned by 0 shows as owned by the host id of container id 0
	// (100000, say), and so as owned by root inside the namespace. An
	// owner the maps leave out shows as the overflow id 65534, as the
	// kernel shows such ids inside the namespace. Diff and Commit map
	// owners back, so that the layers they write hold the image's ids.
	//
	// The overlay driver shows the layers through idmapped mounts (Linux
	// 5.19 or later, on a filesystem that supports them); elsewhere Prepare
	// copies the image with shifted owners, as the copy driver does, and
	// Rootfs.Driver says so. The kernel refuses to idmap by a namespace
	// whose maps are not written yet as it does where it cannot idmap at
	// all, so such a namespace also gets a copy.
	//
	// The rootfs's own directories in the store let the namespace's root
	// group search them, for the sandbox's init to reach the rootfs by its
	// path; the store's top directories must let it search them too.
	//
	// Prepare only uses UserNS while it runs; the caller closes it.
	UserNS         *os.File
	UIDMap, GIDMap []IDMap

	// DiskQuota, if not 0, caps the bytes of what is written to the rootfs
	// (at least MinDiskQuota): past it, writes fail with ENOSPC or EDQUOT,
	// and the store's filesystem keeps the rest of its space. DiskInodes
	// caps the files, directories and links made in it; 0 means one per 4
	// KiB of DiskQuota, which ordinary files never reach before the bytes.
	//
	// Where the store's filesystem enforces project quotas (ext4 or XFS
	// mounted with prjquota) and the rootfs is for a user namespace (whose
	// root, unlike the host's, cannot change a file's project), the rootfs
	// gets a project of its own; else it gets an ext4 filesystem of its own in a sparse file on a loop
	// device, which needs mkfs.ext4 (ErrNoMkfs) and costs a few
	// milliseconds more. The quota covers what the driver keeps for the
	// rootfs: with the copy driver, the copy of the image counts too.
	DiskQuota, DiskInodes int64
}

// overflowID is the id the kernel shows for one that a user namespace
// does not map (/proc/sys/fs/overflowuid and overflowgid, 65534 unless an
// administrator changed them).
const overflowID = 65534

// maxIDMapRanges is the most lines the kernel accepts in a uid_map.
const maxIDMapRanges = 340

// An idMapping translates file owners between the ids stored in an image
// (container ids) and the host ids a user namespace maps them to.
type idMapping struct {
	uids, gids []IDMap
	// userns is the namespace itself, to idmap mounts by. It is nil for a
	// mapping read back from a rootfs record, which only Diff uses.
	userns *os.File
}

// idMapping checks opts and returns the mapping they ask for, or nil for
// none.
func (opts *PrepareOptions) idMapping() (*idMapping, error) {
	if opts == nil || opts.UserNS == nil {
		if opts != nil && (len(opts.UIDMap) > 0 || len(opts.GIDMap) > 0) {
			return nil, errors.New("UIDMap and GIDMap need a UserNS")
		}
		return nil, nil
	}
	// Any other kind of file makes mount_setattr fail with EINVAL, which
	// would pass for a kernel without idmapped mounts.
	typ, err := unix.IoctlRetInt(int(opts.UserNS.Fd()), unix.NS_GET_NSTYPE)
	if err != nil || typ != unix.CLONE_NEWUSER {
		return nil, fmt.Errorf("UserNS %s is not a user namespace", opts.UserNS.Name())
	}
	if err := checkIDMaps(opts.UIDMap); err != nil {
		return nil, fmt.Errorf("UIDMap: %w", err)
	}
	if err := checkIDMaps(opts.GIDMap); err != nil {
		return nil, fmt.Errorf("GIDMap: %w", err)
	}
	return &idMapping{uids: slices.Clone(opts.UIDMap), gids: slices.Clone(opts.GIDMap), userns: opts.UserNS}, nil
}

// checkIDMaps checks maps the way the kernel checks a uid_map it is given.
func checkIDMaps(maps []IDMap) error {
	if len(maps) == 0 {
		return errors.New("empty")
	}
	if len(maps) > maxIDMapRanges {
		return fmt.Errorf("%d ranges, more than the kernel's %d", len(maps), maxIDMapRanges)
	}
	for _, m := range maps {
		if m.Size == 0 {
			return fmt.Errorf("range %+v is empty", m)
		}
		if uint64(m.ContainerID)+uint64(m.Size) > 1<<32 || uint64(m.HostID)+uint64(m.Size) > 1<<32 {
			return fmt.Errorf("range %+v goes past the largest id", m)
		}
	}
	for _, side := range []func(IDMap) uint32{
		func(m IDMap) uint32 { return m.ContainerID },
		func(m IDMap) uint32 { return m.HostID },
	} {
		sorted := slices.SortedFunc(slices.Values(maps), func(a, b IDMap) int { return cmp.Compare(side(a), side(b)) })
		for i := 1; i < len(sorted); i++ {
			if uint64(side(sorted[i-1]))+uint64(sorted[i-1].Size) > uint64(side(sorted[i])) {
				return fmt.Errorf("ranges %+v and %+v overlap", sorted[i-1], sorted[i])
			}
		}
	}
	return nil
}

// mappingOf returns the mapping a rootfs record describes, or nil.
func mappingOf(rec rootfsRecord) *idMapping {
	if len(rec.UIDMap) == 0 && len(rec.GIDMap) == 0 {
		return nil
	}
	return &idMapping{uids: rec.UIDMap, gids: rec.GIDMap}
}

func (m *idMapping) hostUID(id uint32) uint32      { return toHost(m.uids, id) }
func (m *idMapping) hostGID(id uint32) uint32      { return toHost(m.gids, id) }
func (m *idMapping) containerUID(id uint32) uint32 { return toContainer(m.uids, id) }
func (m *idMapping) containerGID(id uint32) uint32 { return toContainer(m.gids, id) }

// HostID returns the host id that owns, on disk, a file the container
// id id owns in a rootfs shifted by maps, as the store shifts owners (see
// toHost); ContainerID is the reverse. Rootfs backends outside the store
// (storage plugins) shift owners the same way with them.
func HostID(maps []IDMap, id uint32) uint32 { return toHost(maps, id) }

// ContainerID returns the container id that the host id id shows as under
// maps: the overflow id where the maps leave id out.
func ContainerID(maps []IDMap, id uint32) uint32 { return toContainer(maps, id) }

// toHost returns the host id that maps to the container id id. An id the
// maps leave out becomes the overflow id, mapped in turn if the maps hold
// it: the namespace sees it as the overflow id either way, as the kernel
// shows unmapped owners, and no file ends up owned by a host id outside
// the namespace's ranges, such as host root, unless the overflow id
// itself is unmapped.
func toHost(maps []IDMap, id uint32) uint32 {
	for _, m := range maps {
		if id >= m.ContainerID && uint64(id) < uint64(m.ContainerID)+uint64(m.Size) {
			return m.HostID + (id - m.ContainerID)
		}
	}
	if id != overflowID {
		return toHost(maps, overflowID)
	}
	return overflowID
}

// toContainer returns the container id that the host id id maps to, or
// the overflow id where the maps leave id out, which is what the
// namespace sees.
func toContainer(maps []IDMap, id uint32) uint32 {
	for _, m := range maps {
		if id >= m.HostID && uint64(id) < uint64(m.HostID)+uint64(m.Size) {
			return m.ContainerID + (id - m.HostID)
		}
	}
	return overflowID
}

// Extended attributes that hold ids. The kernel translates them for
// idmapped mounts; a copied or diffed tree must do so itself.
const (
	xattrCapability = "security.capability"
	xattrACLAccess  = "system.posix_acl_access"
	xattrACLDefault = "system.posix_acl_default"
)

// mapXattr returns val, the value of the extended attribute name, with the
// ids in it passed through uid and gid: the user and group entries of a
// POSIX ACL, and the root id of a namespaced (version 3) file capability.
// A capability whose root id becomes 0 is written as version 2, which is
// what the kernel shows a reader in the namespace whose root it is.
// Version 2 capabilities need no change: root of the initial namespace
// owns every namespace, so the kernel honors them in all. Other
// attributes, and values malformed enough that the kernel would refuse
// them, come back unchanged.
func mapXattr(name string, val []byte, uid, gid func(uint32) uint32) []byte {
	le := binary.LittleEndian
	switch name {
	case xattrCapability:
		const (
			revisionMask = 0xff000000
			revision2    = 0x02000000
			revision3    = 0x03000000
			sizeV2       = 20
			sizeV3       = 24
		)
		if len(val) != sizeV3 || le.Uint32(val)&revisionMask != revision3 {
			return val
		}
		out := slices.Clone(val)
		root := uid(le.Uint32(val[sizeV2:]))
		if root == 0 {
			le.PutUint32(out, le.Uint32(val)&^revisionMask|revision2)
			return out[:sizeV2]
		}
		le.PutUint32(out[sizeV2:], root)
		return out
	case xattrACLAccess, xattrACLDefault:
		const (
			aclVersion = 2
			aclUser    = 0x02
			aclGroup   = 0x08
		)
		if len(val) < 4 || (len(val)-4)%8 != 0 || le.Uint32(val) != aclVersion {
			return val
		}
		out := slices.Clone(val)
		for e := out[4:]; len(e) > 0; e = e[8:] {
			switch le.Uint16(e) {
			case aclUser:
				le.PutUint32(e[4:], uid(le.Uint32(e[4:])))
			case aclGroup:
				le.PutUint32(e[4:], gid(le.Uint32(e[4:])))
			}
		}
		return out
	}
	return val
}

// hostXattr maps the ids in an extended attribute of the image to the host.
func (m *idMapping) hostXattr(name string, val []byte) []byte {
	return mapXattr(name, val, m.hostUID, m.hostGID)
}

// containerXattr maps the ids in an extended attribute of the rootfs back
// to the image's.
func (m *idMapping) containerXattr(name string, val []byte) []byte {
	return mapXattr(name, val, m.containerUID, m.containerGID)
}
