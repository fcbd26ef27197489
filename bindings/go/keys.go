package gatos

import (
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

// SigningKey is an ed25519 private key that signs events locally, so the private key
// never travels to the daemon. Its public key must be trusted for its actor on the
// node (`gatos key new`, or a trust graph entry).
type SigningKey struct {
	// Actor the key belongs to ("user:alice"); may be empty when the caller sets
	// Event.Actor itself.
	Actor string
	priv  ed25519.PrivateKey
}

// KeyFromSeed makes a key from its 32-byte seed.
func KeyFromSeed(seed []byte, actor string) (*SigningKey, error) {
	if len(seed) != ed25519.SeedSize {
		return nil, &Error{Code: "BAD_SIGNATURE", Reason: fmt.Sprintf("an ed25519 seed is 32 bytes, not %d", len(seed))}
	}
	return &SigningKey{Actor: actor, priv: ed25519.NewKeyFromSeed(seed)}, nil
}

// KeyFromSeedHex makes a key from its seed in hex (64 digits).
func KeyFromSeedHex(seedHex, actor string) (*SigningKey, error) {
	seed, err := hex.DecodeString(seedHex)
	if err != nil {
		return nil, &Error{Code: "BAD_SIGNATURE", Reason: "the seed is not hex: " + err.Error()}
	}
	return KeyFromSeed(seed, actor)
}

// LoadKeyFile reads a node key file (`.git/gatos/keys/<kind>/<name>.key`, JSON
// {"actor", "public_key", "seed"}) and checks that its public key matches its seed.
func LoadKeyFile(path string) (*SigningKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var doc struct {
		Actor     string `json:"actor"`
		PublicKey string `json:"public_key"`
		Seed      string `json:"seed"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("gatos: %s is not a key file: %w", path, err)
	}
	key, err := KeyFromSeedHex(doc.Seed, doc.Actor)
	if err != nil {
		return nil, err
	}
	if doc.PublicKey != "" && doc.PublicKey != key.PublicKey() {
		return nil, &Error{Code: "BAD_SIGNATURE", Reason: path + ": public_key does not match the seed"}
	}
	return key, nil
}

// PublicKey is the public key as text, "ed25519:<64 hex>".
func (k *SigningKey) PublicKey() string {
	return "ed25519:" + hex.EncodeToString(k.priv.Public().(ed25519.PublicKey))
}

// Sign returns the raw 64-byte signature of message.
func (k *SigningKey) Sign(message []byte) []byte {
	return ed25519.Sign(k.priv, message)
}

// String never shows the seed.
func (k *SigningKey) String() string {
	return fmt.Sprintf("SigningKey(%s, %s)", k.Actor, k.PublicKey())
}

// VerifySignature checks an "ed25519:<hex>" signature of message under an
// "ed25519:<hex>" public key.
func VerifySignature(publicKey string, message []byte, signature string) bool {
	pub, err1 := hex.DecodeString(strings.TrimPrefix(publicKey, "ed25519:"))
	sig, err2 := hex.DecodeString(strings.TrimPrefix(signature, "ed25519:"))
	if err1 != nil || err2 != nil || len(pub) != ed25519.PublicKeySize || len(sig) != ed25519.SignatureSize ||
		!strings.HasPrefix(publicKey, "ed25519:") || !strings.HasPrefix(signature, "ed25519:") {
		return false
	}
	return ed25519.Verify(pub, message, sig)
}
