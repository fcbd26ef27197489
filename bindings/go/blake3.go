package gatos

import (
	"encoding/binary"
	"math/bits"
)

// BLAKE3-256 (hash mode only), after the portable reference implementation. The
// standard library has no BLAKE3, and Event-CIDs need it; events are small, so a
// plain serial implementation is enough and keeps the module free of dependencies.

const (
	b3BlockLen   = 64
	b3ChunkLen   = 1024
	b3ChunkStart = 1 << 0
	b3ChunkEnd   = 1 << 1
	b3Parent     = 1 << 2
	b3Root       = 1 << 3
)

var b3IV = [8]uint32{0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19}

var b3Permutation = [16]int{2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8}

func b3G(s *[16]uint32, a, b, c, d int, mx, my uint32) {
	s[a] += s[b] + mx
	s[d] = bits.RotateLeft32(s[d]^s[a], -16)
	s[c] += s[d]
	s[b] = bits.RotateLeft32(s[b]^s[c], -12)
	s[a] += s[b] + my
	s[d] = bits.RotateLeft32(s[d]^s[a], -8)
	s[c] += s[d]
	s[b] = bits.RotateLeft32(s[b]^s[c], -7)
}

func b3Compress(cv [8]uint32, block [16]uint32, counter uint64, blockLen, flags uint32) [16]uint32 {
	s := [16]uint32{cv[0], cv[1], cv[2], cv[3], cv[4], cv[5], cv[6], cv[7],
		b3IV[0], b3IV[1], b3IV[2], b3IV[3], uint32(counter), uint32(counter >> 32), blockLen, flags}
	m := block
	for r := 0; r < 7; r++ {
		b3G(&s, 0, 4, 8, 12, m[0], m[1])
		b3G(&s, 1, 5, 9, 13, m[2], m[3])
		b3G(&s, 2, 6, 10, 14, m[4], m[5])
		b3G(&s, 3, 7, 11, 15, m[6], m[7])
		b3G(&s, 0, 5, 10, 15, m[8], m[9])
		b3G(&s, 1, 6, 11, 12, m[10], m[11])
		b3G(&s, 2, 7, 8, 13, m[12], m[13])
		b3G(&s, 3, 4, 9, 14, m[14], m[15])
		var p [16]uint32
		for i := range p {
			p[i] = m[b3Permutation[i]]
		}
		m = p
	}
	for i := 0; i < 8; i++ {
		s[i] ^= s[i+8]
		s[i+8] ^= cv[i]
	}
	return s
}

func b3Words(block []byte) [16]uint32 {
	var padded [b3BlockLen]byte
	copy(padded[:], block)
	var w [16]uint32
	for i := range w {
		w[i] = binary.LittleEndian.Uint32(padded[4*i:])
	}
	return w
}

// b3Output is a compression not yet run: a chaining value for a parent, or the root.
type b3Output struct {
	cv       [8]uint32
	block    [16]uint32
	counter  uint64
	blockLen uint32
	flags    uint32
}

func (o b3Output) chainingValue() [8]uint32 {
	s := b3Compress(o.cv, o.block, o.counter, o.blockLen, o.flags)
	var cv [8]uint32
	copy(cv[:], s[:8])
	return cv
}

func (o b3Output) root() [32]byte {
	s := b3Compress(o.cv, o.block, 0, o.blockLen, o.flags|b3Root)
	var out [32]byte
	for i := 0; i < 8; i++ {
		binary.LittleEndian.PutUint32(out[4*i:], s[i])
	}
	return out
}

func b3Chunk(chunk []byte, counter uint64) b3Output {
	cv := b3IV
	flags := uint32(b3ChunkStart)
	for len(chunk) > b3BlockLen {
		s := b3Compress(cv, b3Words(chunk[:b3BlockLen]), counter, b3BlockLen, flags)
		copy(cv[:], s[:8])
		chunk = chunk[b3BlockLen:]
		flags = 0
	}
	return b3Output{cv, b3Words(chunk), counter, uint32(len(chunk)), flags | b3ChunkEnd}
}

func b3ParentOutput(left, right [8]uint32) b3Output {
	var block [16]uint32
	copy(block[:8], left[:])
	copy(block[8:], right[:])
	return b3Output{b3IV, block, 0, b3BlockLen, b3Parent}
}

// Blake3 returns the 32-byte BLAKE3 hash of data.
func Blake3(data []byte) [32]byte {
	chunks := (len(data) + b3ChunkLen - 1) / b3ChunkLen
	if chunks == 0 {
		chunks = 1
	}
	var stack [][8]uint32
	for i := 0; i < chunks-1; i++ {
		cv := b3Chunk(data[i*b3ChunkLen:(i+1)*b3ChunkLen], uint64(i)).chainingValue()
		for total := uint64(i + 1); total&1 == 0; total >>= 1 {
			cv = b3ParentOutput(stack[len(stack)-1], cv).chainingValue()
			stack = stack[:len(stack)-1]
		}
		stack = append(stack, cv)
	}
	out := b3Chunk(data[(chunks-1)*b3ChunkLen:], uint64(chunks-1))
	for j := len(stack) - 1; j >= 0; j-- {
		out = b3ParentOutput(stack[j], out.chainingValue())
	}
	return out.root()
}
