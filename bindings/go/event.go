package gatos

import (
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"regexp"
	"strings"
)

// ZeroOID is the policy root of a node before any policy bundle exists.
const ZeroOID = "0000000000000000000000000000000000000000"

// Event is an event envelope (SPEC §5). Empty optional fields (Caps nil, SigAlg
// and TS "") are left out of the signed bytes; Caps set to an empty non-nil slice
// is encoded as an empty list.
type Event struct {
	Type       string   `json:"type"`
	ULID       string   `json:"ulid,omitempty"`
	Actor      string   `json:"actor,omitempty"`
	Payload    any      `json:"payload"`
	PolicyRoot string   `json:"policy_root,omitempty"`
	Caps       []string `json:"caps,omitempty"`
	SigAlg     string   `json:"sig_alg,omitempty"`
	TS         string   `json:"ts,omitempty"`
}

var actorRe = regexp.MustCompile(`^(user|agent|service):[A-Za-z0-9._-]{1,64}$`)
var nameRe = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// NormalizeActor reads a bare name as "user:<name>" (SPEC §2).
func NormalizeActor(actor string) string {
	if nameRe.MatchString(actor) && !strings.Contains(actor, ":") {
		return "user:" + actor
	}
	return actor
}

// Value is the map whose canonical bytes are signed: the required fields and the
// optional ones that are set, with the payload normalized.
func (e Event) Value() (map[string]any, error) {
	payload, err := Normalize(e.Payload)
	if err != nil {
		return nil, err
	}
	if e.Type == "" || e.ULID == "" || e.Actor == "" || e.PolicyRoot == "" {
		return nil, &Error{Code: "INVALID_EVENT", Reason: "an envelope needs type, ulid, actor and policy_root"}
	}
	if !actorRe.MatchString(e.Actor) {
		return nil, &Error{Code: "INVALID_NAME", Reason: "actor " + e.Actor + " is not kind:name (user, agent or service)"}
	}
	v := map[string]any{"type": e.Type, "ulid": e.ULID, "actor": e.Actor, "payload": payload,
		"policy_root": e.PolicyRoot}
	if e.Caps != nil {
		caps := make([]any, len(e.Caps))
		for i, c := range e.Caps {
			caps[i] = c
		}
		v["caps"] = caps
	}
	if e.SigAlg != "" {
		v["sig_alg"] = e.SigAlg
	}
	if e.TS != "" {
		v["ts"] = e.TS
	}
	return v, nil
}

// Canonical returns the canonical DAG-CBOR bytes of the envelope (without sig).
func (e Event) Canonical() ([]byte, error) {
	v, err := e.Value()
	if err != nil {
		return nil, err
	}
	return EncodeCanonical(v)
}

var cidPrefix = []byte{0x01, 0x71, 0x1e, 0x20}
var base32Lower = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// EventCID is the Event-CID of canonical bytes: CIDv1, dag-cbor, BLAKE3-256
// multihash, base32 lowercase with the "b" multibase prefix.
func EventCID(canonical []byte) string {
	sum := Blake3(canonical)
	return "b" + base32Lower.EncodeToString(append(append([]byte{}, cidPrefix...), sum[:]...))
}

// SignedEvent is an envelope with its canonical bytes, Event-CID and signature.
type SignedEvent struct {
	Event     Event
	Canonical []byte
	CID       string
	Signature string // "ed25519:<128 hex>"
}

// Sign encodes the envelope canonically and signs the bytes with key.
func (e Event) Sign(key *SigningKey) (*SignedEvent, error) {
	data, err := e.Canonical()
	if err != nil {
		return nil, err
	}
	return &SignedEvent{Event: e, Canonical: data, CID: EventCID(data),
		Signature: "ed25519:" + hex.EncodeToString(key.Sign(data))}, nil
}

// EnvelopeJSON is the envelope as the daemon reads it (the JSON of Value).
func (s *SignedEvent) EnvelopeJSON() (json.RawMessage, error) {
	v, err := s.Event.Value()
	if err != nil {
		return nil, err
	}
	return json.Marshal(v)
}
