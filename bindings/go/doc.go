// Package gatos is the Go client of gatosd, the GATOS node daemon.
//
// It speaks the JSONL protocol of docs/protocol.md over a unix socket or loopback
// TCP (with the daemon's token), pipelines requests on one connection, answers the
// daemon's keep-alive pings, and turns error frames into *Error values that
// errors.Is matches against the Err* sentinels (ErrPolicyDenied, ErrInvalidName, …).
//
// Events can be signed here (AppendSigned): the envelope is encoded as canonical
// DAG-CBOR, hashed into its Event-CID (BLAKE3) and signed with ed25519, byte for
// byte as the Python core does (proved by the shared vectors in bindings/vectors).
//
// The module uses the standard library only; BLAKE3 is implemented in blake3.go.
package gatos
