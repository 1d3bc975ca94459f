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
// choosing, so each flag can also be set by a variable given in
// plugin.Options.Env: BERTH_TMPFS_STORAGE_ROOT, _SIZE, _INODES and _SWAP
// (true or false). The root can also be moved at build time (see
// defaultRoot).
package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"

	"github.com/berth-dev/berth/plugin"
)

func main() {
	root := flag.String("root", fromEnv("ROOT", defaultRoot), "absolute directory to mount the tmpfses under")
	size := flag.String("size", fromEnv("SIZE", "256m"), "default tmpfs size per rootfs (bytes, or with a k, m or g suffix)")
	inodes := flag.String("inodes", fromEnv("INODES", ""), "default inode limit per rootfs; empty means one per 4 KiB of size")
	swap := flag.String("swap", fromEnv("SWAP", "false"), "let the kernel swap rootfs pages out (to disk); false mounts with noswap where the kernel has it")
	flag.Parse()

	cfg, err := parseFlags(*root, *size, *inodes, *swap)
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

// envPrefix starts the names of the variables that stand for the flags,
// for a host that cannot pass flags (berth runs a plugin as it is).
const envPrefix = "BERTH_TMPFS_STORAGE_"

// fromEnv is the default of the flag whose variable is envPrefix+name:
// the variable's value if set, else def.
func fromEnv(name, def string) string {
	if v := os.Getenv(envPrefix + name); v != "" {
		return v
	}
	return def
}

func parseFlags(root, size, inodes, swap string) (config, error) {
	on, err := strconv.ParseBool(swap)
	if err != nil {
		return config{}, fmt.Errorf("-swap %q: not true or false", swap)
	}
	return parseConfig(root, size, inodes, on)
}
