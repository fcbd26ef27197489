package gatos

import "fmt"

// Error is an error frame of the daemon ({"ok": false, "error": {"code", "reason",
// "rule"}}) or a failure of the client itself (codes CONNECTION_CLOSED, BAD_REPLY,
// BAD_ENCODING for a value that cannot be signed, CID_MISMATCH).
//
// Test for a kind of error with errors.Is against the sentinels below, which match by
// code and by the code's parents (ErrInvalidName matches INVALID_NS too), or get the
// details with errors.As:
//
//	var gerr *gatos.Error
//	if errors.Is(err, gatos.ErrPolicyDenied) && errors.As(err, &gerr) {
//		log.Printf("denied by %s: %s", gerr.Rule, gerr.Reason)
//	}
type Error struct {
	Code   string
	Reason string
	Rule   string // the deciding policy rule, for POLICY_DENY
	// RequestID is the id of the request the frame answered (empty for local errors).
	RequestID string
}

func (e *Error) Error() string {
	if e.Rule != "" {
		return fmt.Sprintf("gatos: %s: %s (rule %s)", e.Code, e.Reason, e.Rule)
	}
	return fmt.Sprintf("gatos: %s: %s", e.Code, e.Reason)
}

// Is reports whether target is a sentinel *Error whose code is e's code or one of
// its parents.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	if !ok || t.Reason != "" || t.RequestID != "" {
		return false
	}
	for code := e.Code; code != ""; code = codeParent[code] {
		if code == t.Code {
			return true
		}
	}
	return false
}

// Parents make the same hierarchy as the Python client: INVALID_NS is an
// INVALID_NAME, NOT_FAST_FORWARD and LOCKED are CONFLICTs, the bus, job, fold and
// cache codes have a root code each.
var codeParent = map[string]string{
	"INVALID_NS": "INVALID_NAME", "UNKNOWN_SIG_ALG": "BAD_SIGNATURE",
	"NOT_FAST_FORWARD": "CONFLICT", "LOCKED": "CONFLICT", "CORRUPT": "STORAGE",
	"INVALID_FOLD_SPEC": "FOLD_ERROR", "FOLD_FAILED": "FOLD_ERROR", "PROOF_MISMATCH": "FOLD_ERROR",
	"FOLD_FUEL": "FOLD_FAILED", "FOLD_MEMORY": "FOLD_FAILED", "FOLD_STATE": "FOLD_FAILED",
	"INVALID_MESSAGE": "BUS_ERROR", "INVALID_POSITION": "BUS_ERROR", "NOT_PENDING": "BUS_ERROR",
	"UNKNOWN_GROUP": "BUS_ERROR",
	"INVALID_JOB":   "JOB_ERROR", "JOB_NOT_FOUND": "JOB_ERROR", "CLAIM_LOST": "JOB_ERROR",
	"JOB_FINISHED": "JOB_ERROR", "BLOB_NOT_FOUND": "JOB_ERROR", "BLOB_CORRUPT": "JOB_ERROR",
	"RUNNER_UNAVAILABLE": "JOB_ERROR", "BAD_PROOF": "JOB_ERROR",
	"INVALID_QUERY": "CACHE_ERROR", "INVALID_INDEX_SPEC": "CACHE_ERROR", "CORRUPT_INDEX": "CACHE_ERROR",
}

func sentinel(code string) *Error { return &Error{Code: code} }

// Sentinels for errors.Is, one per wire code of docs/protocol.md, plus the client's own.
var (
	ErrBadFrame          = sentinel("BAD_FRAME")
	ErrUnknownType       = sentinel("UNKNOWN_TYPE")
	ErrTooLarge          = sentinel("TOO_LARGE")
	ErrBusy              = sentinel("BUSY")
	ErrTimeout           = sentinel("TIMEOUT")
	ErrUnauthorized      = sentinel("UNAUTHORIZED")
	ErrShuttingDown      = sentinel("SHUTTING_DOWN")
	ErrInternal          = sentinel("INTERNAL")
	ErrInvalidName       = sentinel("INVALID_NAME")
	ErrInvalidNamespace  = sentinel("INVALID_NS")
	ErrInvalidEvent      = sentinel("INVALID_EVENT")
	ErrBadEncoding       = sentinel("BAD_ENCODING")
	ErrBadSignature      = sentinel("BAD_SIGNATURE")
	ErrUnknownSigAlg     = sentinel("UNKNOWN_SIG_ALG")
	ErrUnknownActor      = sentinel("UNKNOWN_ACTOR")
	ErrULIDReused        = sentinel("ULID_REUSED")
	ErrNotFound          = sentinel("NOT_FOUND")
	ErrConflict          = sentinel("CONFLICT")
	ErrNotFastForward    = sentinel("NOT_FAST_FORWARD")
	ErrLocked            = sentinel("LOCKED")
	ErrRefInTheWay       = sentinel("REF_IN_THE_WAY")
	ErrStorage           = sentinel("STORAGE")
	ErrCorrupt           = sentinel("CORRUPT")
	ErrNoActor           = sentinel("NO_ACTOR")
	ErrInvalidConfig     = sentinel("INVALID_CONFIG")
	ErrPolicyDenied      = sentinel("POLICY_DENY")
	ErrInvalidPolicy     = sentinel("INVALID_POLICY")
	ErrInvalidGrant      = sentinel("INVALID_GRANT")
	ErrFold              = sentinel("FOLD_ERROR")
	ErrInvalidFoldSpec   = sentinel("INVALID_FOLD_SPEC")
	ErrFoldFailed        = sentinel("FOLD_FAILED")
	ErrFoldFuel          = sentinel("FOLD_FUEL")
	ErrFoldMemory        = sentinel("FOLD_MEMORY")
	ErrFoldState         = sentinel("FOLD_STATE")
	ErrBus               = sentinel("BUS_ERROR")
	ErrInvalidMessage    = sentinel("INVALID_MESSAGE")
	ErrInvalidPosition   = sentinel("INVALID_POSITION")
	ErrNotPending        = sentinel("NOT_PENDING")
	ErrUnknownGroup      = sentinel("UNKNOWN_GROUP")
	ErrJob               = sentinel("JOB_ERROR")
	ErrInvalidJob        = sentinel("INVALID_JOB")
	ErrJobNotFound       = sentinel("JOB_NOT_FOUND")
	ErrClaimLost         = sentinel("CLAIM_LOST")
	ErrJobFinished       = sentinel("JOB_FINISHED")
	ErrBlobNotFound      = sentinel("BLOB_NOT_FOUND")
	ErrBlobCorrupt       = sentinel("BLOB_CORRUPT")
	ErrRunnerUnavailable = sentinel("RUNNER_UNAVAILABLE")
	ErrBadProof          = sentinel("BAD_PROOF")
	ErrCache             = sentinel("CACHE_ERROR")
	ErrInvalidQuery      = sentinel("INVALID_QUERY")
	ErrInvalidIndexSpec  = sentinel("INVALID_INDEX_SPEC")
	ErrCorruptIndex      = sentinel("CORRUPT_INDEX")
	ErrSyncFailed        = sentinel("SYNC_FAILED")

	// Client-side codes, never sent by a daemon.
	ErrConnectionClosed = sentinel("CONNECTION_CLOSED")
	ErrBadReply         = sentinel("BAD_REPLY")
	ErrCIDMismatch      = sentinel("CID_MISMATCH")
)
