// Command tmpfs-storage is a berth storage plugin that keeps each
// sandbox's writes on a tmpfs of its own, with a size and an inode limit:
// for throw-away code-execution sandboxes, where nothing the workload
// writes should reach the disk, a full rootfs should be ENOSPC in the
// sandbox rather than a full host disk, and releasing the sandbox should
// free everything it wrote at once.
//
// The image's layers stay where berth's store unpacked them: the rootfs
// is an overlay of them under an upper directory on the tmpfs. berth
// starts the plugin itself:
//
//	berth run --storage-plugin /usr/local/lib/berth/plugins/tmpfs-storage alpine sh
//
// Flags set the defaults; a sandbox's disk quota, or the host's settings
// "size" and "inodes" (plugin.Options.Settings), override them per rootfs.
// berth starts plugins without arguments and with an environment of its
// choosing, so the root can also be set by $BERTH_TMPFS_STORAGE_ROOT given
// in plugin.Options.Env, or at build time (see defaultRoot).
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/berth-dev/berth/plugin"
)

func main() {
	root := flag.String("root", rootFromEnv(), "absolute directory to mount the tmpfses under; $"+rootEnv+" sets the default")
	size := flag.String("size", "256m", "default tmpfs size per rootfs (bytes, or with a k, m or g suffix)")
	inodes := flag.String("inodes", "", "default inode limit per rootfs; empty means one per 4 KiB of size")
	swap := flag.Bool("swap", false, "let the kernel swap rootfs pages out (to disk); off mounts with noswap where the kernel has it")
	flag.Parse()

	cfg, err := parseConfig(*root, *size, *inodes, *swap)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tmpfs-storage:", err)
		os.Exit(2)
	}
	s, err := newStorage(cfg, plugin.Logger())
	if err != nil {
		fmt.Fprintln(os.Stderr, "tmpfs-storage:", err)
		os.Exit(1)
	}
	plugin.ServeStorage(s)
}

// rootEnv names the variable that moves the root, for a host that cannot
// pass flags (berth runs a plugin as it is) and for tests.
const rootEnv = "BERTH_TMPFS_STORAGE_ROOT"

func rootFromEnv() string {
	if r := os.Getenv(rootEnv); r != "" {
		return r
	}
	return defaultRoot
}
