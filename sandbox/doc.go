// Package sandbox runs programs in hardened Linux containers made from OCI
// images, the way os/exec runs them on the host.
//
//	sb := sandbox.New("alpine:3.20", &sandbox.Options{Args: []string{"echo", "hi"}, Stdout: os.Stdout})
//	res, err := sb.Run(ctx)
//
// Each sandbox gets a copy-on-write root filesystem over the image's
// shared layers, its own PID, mount, UTS, IPC, network and cgroup
// namespaces, a cgroup with the requested limits, a minimal /dev whose
// devices (and those passed in Options.Devices) are the only ones its
// cgroup lets it use, and the capabilities, masked paths and no_new_privs
// of its security.Config.
//
// The sandbox's PID 1 is this program's own executable, started again from
// a read-only mount of itself: a C constructor linked in by this package
// takes over before the Go runtime starts, so the host program needs no
// special call in main, and each idle sandbox costs the host only that
// small init process. See SECURITY.md for why it is safe.
//
// A Pool keeps sandboxes of one image and configuration built ahead of
// time, PID 1 waiting, so that starting one only names its workload: a
// few milliseconds instead of the tens a sandbox built from nothing takes
// on a host with cgroup v1 controllers (bench/README.md has the figures).
//
// Commit saves what a sandbox wrote as a new image in its store, while it
// runs (frozen for the moment it takes) or, with Options.KeepRootfs,
// after its workload has ended:
//
//	sb := sandbox.New("alpine:3.20", &sandbox.Options{Args: args, KeepRootfs: true})
//	defer sb.Close() // releases the kept rootfs
//	res, err := sb.Run(ctx)
//	img, err := sb.Commit(ctx, "myimage:1", &sandbox.CommitOptions{Message: "built"})
//
// Sandboxes are independent: many goroutines may create and run them at
// once.
package sandbox
