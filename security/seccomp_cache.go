package security

import (
	"crypto/sha256"
	"encoding/binary"
	"sync"
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
	// Compiling outside the lock lets other profiles proceed; two callers
	// racing on one profile both compile, and either result is right.
	prog, err = p.Compile(caps)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.programs == nil || len(c.programs) >= maxCachedPrograms {
		c.programs = make(map[[sha256.Size]byte][]byte)
	}
	c.programs[key] = prog
	return prog, nil
}
