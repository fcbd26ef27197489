package gatos

import (
	"context"
	"encoding/json"
	"time"
)

// Hello is the reply to `hello`: versions, limits, methods and the node.
type Hello struct {
	Server   string `json:"server"`
	Version  string `json:"version"`
	Protocol int    `json:"protocol"`
	Node     struct {
		Repo  string `json:"repo"`
		Actor string `json:"actor"` // the node's default actor, "" if unset
	} `json:"node"`
	Limits  map[string]json.Number `json:"limits"`
	Methods []string               `json:"methods"`
}

// Status is the reply to `status`.
type Status struct {
	PID         int     `json:"pid"`
	Repo        string  `json:"repo"`
	UptimeS     float64 `json:"uptime_s"`
	Connections int     `json:"connections"`
	Queued      int     `json:"queued"`
	Batches     int64   `json:"batches"`
	Events      int64   `json:"events"`
	Stopping    bool    `json:"stopping"`
}

// Status asks the daemon how it is doing.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var out Status
	return &out, c.Call(ctx, "status", nil, &out)
}

// AppendResult is the reply to `append_event`.
type AppendResult struct {
	NS        string `json:"ns"`
	Ref       string `json:"ref"`
	Commit    string `json:"commit"`
	EventCID  string `json:"event_cid"`
	ULID      string `json:"ulid"`
	Actor     string `json:"actor"`
	Duplicate bool   `json:"duplicate"` // the same ULID and body were already appended
}

// AppendEvent appends an event signed by the node with the key it holds for the
// actor (event.Actor, or the node's default actor when empty). ULID, TS and
// PolicyRoot are filled in by the daemon when empty.
func (c *Client) AppendEvent(ctx context.Context, ns string, event Event) (*AppendResult, error) {
	payload, err := Normalize(event.Payload)
	if err != nil {
		return nil, err
	}
	body := map[string]any{"type": event.Type, "payload": payload}
	for name, value := range map[string]string{"ulid": event.ULID, "ts": event.TS, "actor": event.Actor,
		"policy_root": event.PolicyRoot, "sig_alg": event.SigAlg} {
		if value != "" {
			body[name] = value
		}
	}
	if event.Caps != nil {
		body["caps"] = event.Caps
	}
	var out AppendResult
	return &out, c.Call(ctx, "append_event", map[string]any{"ns": ns, "event": body}, &out)
}

// Complete fills in what a client-signed envelope needs and the caller left empty:
// Actor from the key, a fresh ULID, TS from the ULID's time and the zero policy root.
func (e Event) Complete(key *SigningKey) Event {
	if e.Actor == "" && key != nil {
		e.Actor = key.Actor
	}
	e.Actor = NormalizeActor(e.Actor)
	if e.ULID == "" {
		e.ULID = NewULID()
	}
	if e.TS == "" {
		if t, ok := ULIDTime(e.ULID); ok {
			e.TS = t.Format("2006-01-02T15:04:05.000Z")
		}
	}
	if e.PolicyRoot == "" {
		e.PolicyRoot = ZeroOID
	}
	return e
}

// AppendSigned signs the event here with key (the private key never leaves this
// process) and appends it. Empty fields are completed first (see Event.Complete).
// The daemon verifies the signature against the actor's trusted keys; the reply's
// Event-CID is checked against the one computed here (ErrCIDMismatch otherwise).
func (c *Client) AppendSigned(ctx context.Context, ns string, event Event, key *SigningKey) (*AppendResult, error) {
	signed, err := event.Complete(key).Sign(key)
	if err != nil {
		return nil, err
	}
	return c.AppendSignedEvent(ctx, ns, signed)
}

// AppendSignedEvent appends an event signed beforehand.
func (c *Client) AppendSignedEvent(ctx context.Context, ns string, signed *SignedEvent) (*AppendResult, error) {
	envelope, err := signed.EnvelopeJSON()
	if err != nil {
		return nil, err
	}
	var out AppendResult
	err = c.Call(ctx, "append_event", map[string]any{"ns": ns, "event": envelope, "sig": signed.Signature}, &out)
	if err != nil {
		return nil, err
	}
	if out.EventCID != signed.CID {
		return &out, &Error{Code: "CID_MISMATCH", Reason: "the daemon stored " + out.EventCID + ", signed " + signed.CID}
	}
	return &out, nil
}

// JournalEntry is one event of a journal, with its commit, Event-CID and signature.
type JournalEntry struct {
	Event
	Commit   string `json:"commit"`
	EventCID string `json:"event_cid"`
	Sig      string `json:"sig"`
}

// ReadOptions narrow a journal read; zero values mean "not set".
type ReadOptions struct {
	After     string // commit, exclusive
	AfterULID string
	Until     string // commit
	Limit     int
	Last      int
}

// JournalRead returns the events of one journal, oldest first (long reads arrive in
// several frames and are joined here).
func (c *Client) JournalRead(ctx context.Context, ns, actor string, opts ReadOptions) ([]JournalEntry, error) {
	fields := map[string]any{"ns": ns, "actor": actor}
	for name, value := range map[string]string{"after": opts.After, "after_ulid": opts.AfterULID, "until": opts.Until} {
		if value != "" {
			fields[name] = value
		}
	}
	if opts.Limit > 0 {
		fields["limit"] = opts.Limit
	}
	if opts.Last > 0 {
		fields["last"] = opts.Last
	}
	stream, err := c.Stream("journal.read", fields)
	if err != nil {
		return nil, err
	}
	defer stream.Close()
	var entries []JournalEntry
	for {
		frame, final, err := stream.Next(ctx)
		if err != nil {
			return nil, err
		}
		var part struct {
			Entries []JournalEntry `json:"entries"`
		}
		if err := frame.Decode(&part); err != nil {
			return nil, &Error{Code: "BAD_REPLY", Reason: err.Error()}
		}
		entries = append(entries, part.Entries...)
		if final {
			return entries, nil
		}
	}
}

// JournalHead returns the head commit of a journal ("" when empty or absent).
func (c *Client) JournalHead(ctx context.Context, ns, actor string) (string, error) {
	var out struct {
		Head *string `json:"head"`
	}
	if err := c.Call(ctx, "journal.head", map[string]any{"ns": ns, "actor": actor}, &out); err != nil {
		return "", err
	}
	if out.Head == nil {
		return "", nil
	}
	return *out.Head, nil
}

// VerifyResult is the reply to `verify`.
type VerifyResult struct {
	Journals int  `json:"journals"`
	Events   int  `json:"events"`
	Valid    bool `json:"valid"`
	Problems []struct {
		Ref    string `json:"ref"`
		Commit string `json:"commit"`
		Reason string `json:"reason"`
	} `json:"problems"`
}

// Verify checks every journal of the node.
func (c *Client) Verify(ctx context.Context) (*VerifyResult, error) {
	var out VerifyResult
	return &out, c.Call(ctx, "verify", nil, &out)
}

// FoldOptions choose the fold spec and channel of `fold_state`.
type FoldOptions struct {
	Spec    string // path inside the node's working tree, e.g. "folds/invoices.yaml"
	Channel string
	Full    bool // fold from scratch instead of from the last checkpoint
	// Progress, when set, is called with each progress frame ({"done", "total"}).
	Progress func(done, total int64)
}

// FoldResult is the final frame of `fold_state`.
type FoldResult struct {
	NS          string `json:"ns"`
	Commit      string `json:"commit"`
	StateRoot   string `json:"state_root"`
	Events      int64  `json:"events"`
	NewEvents   int64  `json:"new_events"`
	Incremental bool   `json:"incremental"`
	Written     bool   `json:"written"`
	Channel     string `json:"channel"`
	Value       any    `json:"value"`
}

// FoldState folds a namespace into a state checkpoint and returns it.
func (c *Client) FoldState(ctx context.Context, ns string, opts FoldOptions) (*FoldResult, error) {
	fields := map[string]any{"ns": ns}
	if opts.Spec != "" {
		fields["spec"] = opts.Spec
	}
	if opts.Channel != "" {
		fields["channel"] = opts.Channel
	}
	if opts.Full {
		fields["full"] = true
	}
	stream, err := c.Stream("fold_state", fields)
	if err != nil {
		return nil, err
	}
	defer stream.Close()
	for {
		frame, final, err := stream.Next(ctx)
		if err != nil {
			return nil, err
		}
		if final {
			var out FoldResult
			if err := frame.Decode(&out); err != nil {
				return nil, &Error{Code: "BAD_REPLY", Reason: err.Error()}
			}
			return &out, nil
		}
		var p struct {
			Progress *struct{ Done, Total int64 } `json:"progress"`
		}
		if opts.Progress != nil && frame.Decode(&p) == nil && p.Progress != nil {
			opts.Progress(p.Progress.Done, p.Progress.Total)
		}
	}
}

// StateGet returns the newest state checkpoint of a namespace (the whole reply).
func (c *Client) StateGet(ctx context.Context, ns, channel string) (map[string]any, error) {
	fields := map[string]any{"ns": ns}
	if channel != "" {
		fields["channel"] = channel
	}
	var out map[string]any
	return out, c.Call(ctx, "state.get", fields, &out)
}

func millis(d time.Duration) int64 { return d.Milliseconds() }
