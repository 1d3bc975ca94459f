package security

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	seccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/sys/unix"
)

// A SeccompCache keeps compiled programs, so that starting many sandboxes
// with the same profile and capabilities compiles it once: compiling
// Docker's profile takes libseccomp some 14 ms, several times what the
// rest of a sandbox's start costs. Programs are keyed by the profile's
// content, not its address, so fresh copies of one profile share an entry.
// The zero value is ready to use; it is safe for concurrent use.
type SeccompCache struct {
	mu       sync.Mutex
	programs map[[sha256.Size]byte][]byte
}

// maxCachedPrograms bounds the cache; a program is about 10 KiB.
const maxCachedPrograms = 256

// Program returns p compiled for caps, from the cache if it is there.
func (c *SeccompCache) Program(p *SeccompProfile, caps uint64) ([]byte, error) {
	return c.ProgramIn("", p, caps)
}

// ProgramIn is Program that also keeps compiled programs as files in dir,
// for programs that start once and run one sandbox, as the berth command
// does, and so would otherwise compile every time. The files are keyed by
// the profile, the capabilities, the kernel release and libseccomp's
// version. They are trusted as the filter itself, so dir is made 0700 and
// a file is used only if it and dir belong to this user and no one else
// may write them; anything else is compiled afresh. Empty dir means memory
// only.
func (c *SeccompCache) ProgramIn(dir string, p *SeccompProfile, caps uint64) ([]byte, error) {
	js, err := p.JSON()
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	h.Write(js)
	binary.Write(h, binary.LittleEndian, caps)
	var key [sha256.Size]byte
	h.Sum(key[:0])

	c.mu.Lock()
	prog, ok := c.programs[key]
	c.mu.Unlock()
	if ok {
		return prog, nil
	}
	var file string
	if dir != "" {
		file = filepath.Join(dir, programFileName(key))
		if prog, ok := readProgram(dir, file); ok {
			c.store(key, prog)
			return prog, nil
		}
	}
	// Compiling outside the lock lets other profiles proceed; two callers
	// racing on one profile both compile, and either result is right.
	prog, err = p.Compile(caps)
	if err != nil {
		return nil, err
	}
	c.store(key, prog)
	if file != "" {
		// A cache: failing to write it costs the next process a compile.
		writeProgram(dir, file, prog)
	}
	return prog, nil
}

func (c *SeccompCache) store(key [sha256.Size]byte, prog []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.programs == nil || len(c.programs) >= maxCachedPrograms {
		c.programs = make(map[[sha256.Size]byte][]byte)
	}
	c.programs[key] = prog
}

// programFileName names a program's file by its key and by what else
// decides what Compile makes of a profile: the kernel and libseccomp.
func programFileName(key [sha256.Size]byte) string {
	var u unix.Utsname
	unix.Uname(&u)
	maj, min, micro := seccomp.GetLibraryVersion()
	h := sha256.New()
	h.Write(key[:])
	fmt.Fprintf(h, "\x00%s\x00%d.%d.%d", unix.ByteSliceToString(u.Release[:]), maj, min, micro)
	return hex.EncodeToString(h.Sum(nil)) + ".bpf"
}

// ownedPrivately reports whether fi belongs to this user and no one else
// may write it.
func ownedPrivately(fi os.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == os.Geteuid() && fi.Mode().Perm()&0o022 == 0
}

func readProgram(dir, file string) ([]byte, bool) {
	if fi, err := os.Lstat(dir); err != nil || !fi.IsDir() || !ownedPrivately(fi) {
		return nil, false
	}
	f, err := os.OpenFile(file, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, false
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || !ownedPrivately(fi) || fi.Size() == 0 || fi.Size()%8 != 0 || fi.Size() > maxProgramBytes {
		return nil, false
	}
	prog, err := io.ReadAll(f)
	if err != nil || len(prog) != int(fi.Size()) {
		return nil, false
	}
	return prog, true
}

// maxProgramBytes is BPF_MAXINSNS instructions of 8 bytes: the kernel
// takes no longer program.
const maxProgramBytes = 4096 * 8

func writeProgram(dir, file string, prog []byte) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return
	}
	tmp, err := os.CreateTemp(dir, ".program-*")
	if err != nil {
		return
	}
	_, err = tmp.Write(prog)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), file)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
}
