//go:build linux

package cgroup

import (
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// The unified hierarchy has no devices controller: a cgroup's device
// access is decided by BPF_PROG_TYPE_CGROUP_DEVICE programs attached to
// it, which the kernel runs on every open and mknod of a device node by a
// member (and on Hybrid hosts as well as the v1 controller's check).

// The fields of struct bpf_cgroup_dev_ctx, the program's input: each a
// 32-bit word.
const (
	ctxAccessType = 0 // device type in the low 16 bits, access in the high 16
	ctxMajor      = 4
	ctxMinor      = 8
)

// BPF_DEVCG_DEV_BLOCK and BPF_DEVCG_DEV_CHAR.
const (
	bpfDevBlock = 1
	bpfDevChar  = 2
)

// deviceProgramName is what the program is called in bpftool's listing.
const deviceProgramName = "berth_devices"

// deviceInstructions compiles rules into a program that returns 1 (allow)
// for an access some rule covers and 0 (deny, EPERM) for any other.
func deviceInstructions(rules []DeviceRule) (asm.Instructions, error) {
	insns := asm.Instructions{
		// R2 = access, R3 = type, R4 = major, R5 = minor.
		asm.LoadMem(asm.R2, asm.R1, ctxAccessType, asm.Word),
		asm.Mov.Reg(asm.R3, asm.R2),
		asm.And.Imm(asm.R3, 0xffff),
		asm.RSh.Imm(asm.R2, 16),
		asm.LoadMem(asm.R4, asm.R1, ctxMajor, asm.Word),
		asm.LoadMem(asm.R5, asm.R1, ctxMinor, asm.Word),
	}
	// Each rule is a run of tests, any of which failing jumps to the next
	// rule; passing them all returns 1. The first instruction of the next
	// rule (or of the final deny) carries the label.
	label := ""
	emit := func(ins asm.Instruction) {
		if label != "" {
			ins = ins.WithSymbol(label)
			label = ""
		}
		insns = append(insns, ins)
	}
	for i, r := range rules {
		access, err := parseAccess(r.Access)
		if err != nil {
			return nil, err
		}
		next := "rule" + strconv.Itoa(i+1)
		typ := int32(bpfDevChar)
		if r.Type == BlockDevice {
			typ = bpfDevBlock
		}
		emit(asm.JNE.Imm(asm.R3, typ, next))
		if access != accessAll {
			// Every access bit asked for must be one the rule has.
			emit(asm.Mov.Reg(asm.R6, asm.R2))
			emit(asm.And.Imm(asm.R6, int32(accessAll&^access)))
			emit(asm.JNE.Imm(asm.R6, 0, next))
		}
		if r.Major != AnyDeviceNumber {
			emit(asm.JNE.Imm(asm.R4, int32(r.Major), next))
		}
		if r.Minor != AnyDeviceNumber {
			emit(asm.JNE.Imm(asm.R5, int32(r.Minor), next))
		}
		emit(asm.Mov.Imm(asm.R0, 1))
		emit(asm.Return())
		label = next
	}
	emit(asm.Mov.Imm(asm.R0, 0))
	emit(asm.Return())
	return insns, nil
}

// maxDevicePrograms bounds how many programs a Manager keeps loaded for
// reuse. A host normally has a handful of rule sets (one per distinct set
// of passed-in devices); past the bound, one is let go, which only means
// it is loaded again when next needed.
const maxDevicePrograms = 32

// devicePrograms keeps loaded device programs by rule set, so that the
// cgroups of many sandboxes share one: loading a program runs the
// kernel's verifier, attaching a loaded one does not. A program attached
// to a cgroup stays in the kernel for as long as the cgroup does, whether
// or not it is still kept here.
type devicePrograms struct {
	mu    sync.Mutex
	progs map[string]*ebpf.Program
}

// attach attaches the program for rules to the cgroup2 directory dir,
// replacing any device program attached there before. It uses
// BPF_PROG_ATTACH, not a BPF link: the attachment belongs to the cgroup
// and lasts until the cgroup is removed, not only while this process
// holds a descriptor.
func (d *devicePrograms) attach(dir string, rules []DeviceRule) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("cgroup: %s: %w", dir, ErrNotFound)
		}
		return fmt.Errorf("cgroup: open %s: %w", dir, err)
	}
	defer unix.Close(fd)

	// Held until attached, so that a program cannot be let go (and its
	// descriptor number reused) between the lookup and the attach.
	d.mu.Lock()
	defer d.mu.Unlock()
	prog, err := d.program(rules)
	if err != nil {
		return err
	}
	// Flags 0: the one program of this cgroup, replaced by the next
	// attach (Update); no cgroup below it may attach programs of its own.
	err = link.RawAttachProgram(link.RawAttachProgramOptions{
		Target:  fd,
		Program: prog,
		Attach:  ebpf.AttachCGroupDevice,
	})
	if err != nil {
		if errors.Is(err, ebpf.ErrNotSupported) {
			err = fmt.Errorf("%w (%w)", errors.ErrUnsupported, err)
		}
		return fmt.Errorf("cgroup: attach device program to %s: %w", dir, err)
	}
	return nil
}

// program returns the loaded program for rules, loading it if needed.
// Called with d.mu held.
func (d *devicePrograms) program(rules []DeviceRule) (*ebpf.Program, error) {
	key := deviceKey(rules)
	if p, ok := d.progs[key]; ok {
		return p, nil
	}
	insns, err := deviceInstructions(rules)
	if err != nil {
		return nil, fmt.Errorf("cgroup: device program: %w", err)
	}
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         deviceProgramName,
		Type:         ebpf.CGroupDevice,
		Instructions: insns,
		License:      "Apache-2.0",
	})
	if err != nil {
		if errors.Is(err, ebpf.ErrNotSupported) {
			err = fmt.Errorf("%w (%w)", errors.ErrUnsupported, err)
		}
		return nil, fmt.Errorf("cgroup: load device program: %w", err)
	}
	if d.progs == nil {
		d.progs = make(map[string]*ebpf.Program)
	}
	if len(d.progs) >= maxDevicePrograms {
		for k, old := range d.progs {
			old.Close()
			delete(d.progs, k)
			break
		}
	}
	d.progs[key] = p
	return p, nil
}

// close lets every kept program go; those attached to cgroups stay
// there.
func (d *devicePrograms) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for k, p := range d.progs {
		p.Close()
		delete(d.progs, k)
	}
}
