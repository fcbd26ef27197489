package gatos

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

type vector struct {
	Name         string         `json:"name"`
	Envelope     map[string]any `json:"envelope"`
	CanonicalHex string         `json:"canonical_hex"`
	CID          string         `json:"cid"`
	PublicKey    string         `json:"public_key"`
	Signature    string         `json:"signature"`
}

func loadJSON(t *testing.T, name string, out any) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "vectors", name))
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(out); err != nil {
		t.Fatal(err)
	}
}

func eventFromMap(t *testing.T, m map[string]any) Event {
	t.Helper()
	e := Event{Payload: m["payload"]}
	e.Type, _ = m["type"].(string)
	e.ULID, _ = m["ulid"].(string)
	e.Actor, _ = m["actor"].(string)
	e.PolicyRoot, _ = m["policy_root"].(string)
	e.SigAlg, _ = m["sig_alg"].(string)
	e.TS, _ = m["ts"].(string)
	if caps, ok := m["caps"].([]any); ok {
		e.Caps = []string{}
		for _, c := range caps {
			e.Caps = append(e.Caps, c.(string))
		}
	}
	return e
}

func TestVectorsByteForByte(t *testing.T) {
	var vectors []vector
	loadJSON(t, "events.json", &vectors)
	var testKey map[string]string
	loadJSON(t, "test_key.json", &testKey)
	key, err := KeyFromSeedHex(testKey["seed"], "")
	if err != nil {
		t.Fatal(err)
	}
	if key.PublicKey() != testKey["public_key"] {
		t.Fatalf("public key %s, want %s", key.PublicKey(), testKey["public_key"])
	}
	if len(vectors) < 20 {
		t.Fatalf("only %d vectors", len(vectors))
	}
	for _, v := range vectors {
		t.Run(v.Name, func(t *testing.T) {
			direct, err := EncodeCanonical(v.Envelope)
			if err != nil {
				t.Fatal(err)
			}
			if got := hex.EncodeToString(direct); got != v.CanonicalHex {
				t.Fatalf("canonical bytes differ:\n got %s\nwant %s", got, v.CanonicalHex)
			}
			signed, err := eventFromMap(t, v.Envelope).Sign(key)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(signed.Canonical, direct) {
				t.Fatalf("Event.Canonical differs from the envelope's canonical bytes")
			}
			if signed.CID != v.CID {
				t.Errorf("cid %s, want %s", signed.CID, v.CID)
			}
			if key.PublicKey() != v.PublicKey || signed.Signature != v.Signature {
				t.Errorf("signature %s, want %s", signed.Signature, v.Signature)
			}
			if !VerifySignature(v.PublicKey, direct, v.Signature) {
				t.Errorf("the vector's signature does not verify")
			}
		})
	}
}

func TestRefusesWhatCannotBeCanonical(t *testing.T) {
	big := json.Number("18446744073709551616") // 2^64
	for name, value := range map[string]any{
		"float":           map[string]any{"x": 1.5},
		"json float":      json.Number("1.0"),
		"exponent":        json.Number("1e3"),
		"too big":         big,
		"too small":       json.Number("-18446744073709551617"),
		"bad utf-8":       "\xff",
		"float in struct": struct{ X float64 }{1.5},
	} {
		if _, err := EncodeCanonical(value); !errors.Is(err, ErrBadEncoding) {
			t.Errorf("%s: got %v, want BAD_ENCODING", name, err)
		}
	}
	deep := any(1)
	for i := 0; i < 70; i++ {
		deep = []any{deep}
	}
	if _, err := EncodeCanonical(deep); !errors.Is(err, ErrBadEncoding) {
		t.Errorf("deep nesting: got %v", err)
	}
}

func TestStructsAndTypedValuesEncodeLikeMaps(t *testing.T) {
	type invoice struct {
		Amount   uint64 `json:"amount"`
		Currency string `json:"currency"`
		Lines    []int8 `json:"lines"`
	}
	a, err := EncodeCanonical(invoice{1200, "EUR", []int8{-1, 2}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := EncodeCanonical(map[string]any{"currency": "EUR", "lines": []any{-1, 2}, "amount": 1200})
	if !bytes.Equal(a, b) {
		t.Fatalf("struct %x != map %x", a, b)
	}
}

func TestULIDsAreValidAndMonotonic(t *testing.T) {
	prev := ""
	for i := 0; i < 1000; i++ {
		u := NewULID()
		if len(u) != 26 || u <= prev {
			t.Fatalf("ulid %q after %q", u, prev)
		}
		if _, ok := ULIDTime(u); !ok {
			t.Fatalf("ULIDTime(%q) failed", u)
		}
		prev = u
	}
}
