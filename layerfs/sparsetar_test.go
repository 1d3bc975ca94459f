package layerfs

import (
	"fmt"
	"strconv"
)

// sparseTar returns a tar holding one GNU sparse file (PAX format 1.0),
// name, of realSize bytes that holds data at offset 0 and a hole after it.
// archive/tar cannot write sparse files, so the blocks are made by hand.
func sparseTar(name string, realSize int64, data string) []byte {
	var pax string
	for _, kv := range [][2]string{
		{"GNU.sparse.major", "1"}, {"GNU.sparse.minor", "0"},
		{"GNU.sparse.name", name}, {"GNU.sparse.realsize", strconv.FormatInt(realSize, 10)},
	} {
		pax += paxRecord(kv[0], kv[1])
	}
	sparseMap := fmt.Sprintf("1\n0\n%d\n", len(data))
	body := pad(sparseMap) + pad(data)
	out := tarBlock("./PaxHeaders/"+name, 'x', len(pax)) + pad(pax) +
		tarBlock("GNUSparseFile.0/"+name, '0', len(pad(sparseMap))+len(data)) + body
	return []byte(out + string(make([]byte, 1024)))
}

// paxRecord formats one PAX extended header record, whose length counts
// its own digits.
func paxRecord(k, v string) string {
	n := len(k) + len(v) + 3
	for {
		s := fmt.Sprintf("%d %s=%s\n", n, k, v)
		if len(s) == n {
			return s
		}
		n = len(s)
	}
}

// tarBlock is a ustar header block for an entry of the given type and size.
func tarBlock(name string, typ byte, size int) string {
	b := make([]byte, 512)
	copy(b, name)
	copy(b[100:], "0000644\x00")
	copy(b[108:], "0000000\x00")
	copy(b[116:], "0000000\x00")
	copy(b[124:], fmt.Sprintf("%011o\x00", size))
	copy(b[136:], "00000000000\x00")
	b[156] = typ
	copy(b[257:], "ustar\x0000")
	copy(b[148:], "        ")
	sum := 0
	for _, c := range b {
		sum += int(c)
	}
	copy(b[148:], fmt.Sprintf("%06o\x00 ", sum))
	return string(b)
}

// pad fills s with NULs to a whole number of tar blocks.
func pad(s string) string {
	if r := len(s) % 512; r != 0 {
		s += string(make([]byte, 512-r))
	}
	return s
}
