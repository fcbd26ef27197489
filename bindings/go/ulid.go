package gatos

import (
	"crypto/rand"
	"sync"
	"time"
)

const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

var ulidState struct {
	sync.Mutex
	ms   int64
	last [10]byte
}

// NewULID returns a fresh ULID, monotonic within this process (two ULIDs made in
// the same millisecond differ by one in their random part).
func NewULID() string {
	ms := time.Now().UnixMilli()
	ulidState.Lock()
	if ms <= ulidState.ms {
		ms = ulidState.ms
		for i := 9; i >= 0; i-- {
			ulidState.last[i]++
			if ulidState.last[i] != 0 {
				break
			}
		}
	} else {
		ulidState.ms = ms
		if _, err := rand.Read(ulidState.last[:]); err != nil {
			panic("gatos: no randomness: " + err.Error())
		}
	}
	var raw [16]byte
	for i := 0; i < 6; i++ {
		raw[i] = byte(ms >> uint(40-8*i))
	}
	copy(raw[6:], ulidState.last[:])
	ulidState.Unlock()
	// 128 bits as 26 base32 digits: two zero bits in front, then 5 bits a digit.
	out := make([]byte, 26)
	var acc uint64
	bitsHeld, pos := 2, 0
	for _, b := range raw {
		acc = acc<<8 | uint64(b)
		bitsHeld += 8
		for bitsHeld >= 5 {
			bitsHeld -= 5
			out[pos] = crockford[(acc>>uint(bitsHeld))&31]
			pos++
		}
	}
	return string(out)
}

// ULIDTime is the millisecond time a ULID holds.
func ULIDTime(ulid string) (time.Time, bool) {
	if len(ulid) != 26 {
		return time.Time{}, false
	}
	var ms int64
	for _, c := range ulid[:10] {
		i := indexCrockford(byte(c))
		if i < 0 {
			return time.Time{}, false
		}
		ms = ms<<5 | int64(i)
	}
	return time.UnixMilli(ms).UTC(), true
}

func indexCrockford(c byte) int {
	if c >= 'a' && c <= 'z' {
		c -= 'a' - 'A'
	}
	for i := 0; i < len(crockford); i++ {
		if crockford[i] == c {
			return i
		}
	}
	return -1
}
