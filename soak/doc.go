// Package soak holds berth's soak test. It is built only with the soak
// build tag, so `go test ./...` and `make test` leave it out; run it as
// root with `make soak`, or
//
//	go test -tags soak -count=1 -timeout 4h -v ./soak/
//
// It drives the berth command through thousands of operations (runs with
// and without a bridge network and published ports, runs with disk
// quotas, execs into running sandboxes, imports, exports, collections) a
// few at a time, while it kills the commands and the sandboxes' init
// processes with SIGKILL at random moments and damages the sandboxes'
// state and rootfs records. Then it runs berth gc until it converges and requires
// that nothing is left: no mounts, cgroups, veths, iptables or nftables
// rules, IPAM leases, loop devices, state or temporary files, and a store
// that berth image check finds sound.
//
// Everything it makes is private to it: a store, a state directory and a
// cgroup parent of its own, and a named network with its own bridge. It
// kills only processes it started, or the init processes recorded in its
// own state directory that run in its own cgroups.
//
// Settings, from the environment:
//
//	BERTH_SOAK_RUNS         operations in all (default 2000; 60 with -short)
//	BERTH_SOAK_CONCURRENCY  operations at once (default 4)
//	BERTH_SOAK_SEED         seed of the random choices (default: the time)
//	BERTH_SOAK_BINARY       the berth command to drive (default: bin/berth)
package soak
