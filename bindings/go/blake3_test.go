package gatos

import (
	"encoding/hex"
	"testing"
)

func TestBlake3ReferenceValues(t *testing.T) {
	// SPEC §3 reference values.
	for in, want := range map[string]string{
		"":      "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
		"hello": "ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f",
	} {
		if got := Blake3([]byte(in)); hex.EncodeToString(got[:]) != want {
			t.Errorf("blake3(%q) = %x, want %s", in, got, want)
		}
	}
}

func TestBlake3ChunkAndTreeBoundaries(t *testing.T) {
	// Input byte i is i % 251 (the official BLAKE3 test-vector input), lengths around
	// the block, chunk and tree boundaries; values from the Python `blake3` package.
	cases := map[int]string{
		1:     "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213",
		63:    "e9bc37a594daad83be9470df7f7b3798297c3d834ce80ba85d6e207627b7db7b",
		64:    "4eed7141ea4a5cd4b788606bd23f46e212af9cacebacdc7d1f4c6dc7f2511b98",
		65:    "de1e5fa0be70df6d2be8fffd0e99ceaa8eb6e8c93a63f2d8d1c30ecb6b263dee",
		1023:  "10108970eeda3eb932baac1428c7a2163b0e924c9a9e25b35bba72b28f70bd11",
		1024:  "42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7",
		1025:  "d00278ae47eb27b34faecf67b4fe263f82d5412916c1ffd97c8cb7fb814b8444",
		2048:  "e776b6028c7cd22a4d0ba182a8bf62205d2ef576467e838ed6f2529b85fba24a",
		2049:  "5f4d72f40d7a5f82b15ca2b2e44b1de3c2ef86c426c95c1af0b6879522563030",
		3072:  "b98cb0ff3623be03326b373de6b9095218513e64f1ee2edd2525c7ad1e5cffd2",
		4097:  "9b4052b38f1c5fc8b1f9ff7ac7b27cd242487b3d890d15c96a1c25b8aa0fb995",
		8193:  "bab6c09cb8ce8cf459261398d2e7aef35700bf488116ceb94a36d0f5f1b7bc3b",
		16385: "1dabe216be2578830263b049de1639f39f05a4da616b9b78c7a5e4e41662fd1f",
	}
	for n, want := range cases {
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(i % 251)
		}
		if got := Blake3(data); hex.EncodeToString(got[:]) != want {
			t.Errorf("blake3(%d bytes) = %x, want %s", n, got, want)
		}
	}
}
