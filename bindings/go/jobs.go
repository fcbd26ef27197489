package gatos

import (
	"context"
	"time"
)

// Jobs holds the job-plane methods: c.Jobs().Enqueue, Status, Result, Wait, Cancel.
type Jobs struct{ c *Client }

// Jobs returns the job-plane methods of the connection.
func (c *Client) Jobs() Jobs { return Jobs{c} }

// Manifest is a v1 job manifest (docs/jobs.md). The job id is the hash of its
// canonical JSON: enqueuing the same manifest again returns the same job.
type Manifest struct {
	Command    []string          `json:"command"`
	Args       []string          `json:"args,omitempty"`
	Timeout    int               `json:"timeout"` // whole seconds
	Env        map[string]string `json:"env,omitempty"`
	Cwd        string            `json:"cwd,omitempty"`
	Inputs     []map[string]any  `json:"inputs,omitempty"` // blob pointers
	PolicyRoot string            `json:"policy_root,omitempty"`
	ULID       string            `json:"ulid,omitempty"` // makes an otherwise identical job a new one
}

// Enqueued is the reply to `jobs.enqueue`.
type Enqueued struct {
	JobID     string `json:"job_id"`
	NS        string `json:"ns"`
	Commit    string `json:"commit"`
	Duplicate bool   `json:"duplicate"`
	Runtime   string `json:"runtime"`
}

// Enqueue creates a job in namespace ns.
func (j Jobs) Enqueue(ctx context.Context, ns string, m Manifest) (*Enqueued, error) {
	var out Enqueued
	return &out, j.c.Call(ctx, "jobs.enqueue", map[string]any{"ns": ns, "manifest": m}, &out)
}

// JobStatus is the reply to `jobs.status`: the lifecycle folded from the job's
// events, corrected by its refs.
type JobStatus struct {
	JobID    string `json:"job_id"`
	NS       string `json:"ns"`
	State    string `json:"state"` // pending, claimed, running, succeeded, failed, aborted
	Attempts int    `json:"attempts"`
	Runs     int    `json:"runs"`
	Worker   string `json:"worker"`
	History  []struct {
		State   string `json:"state"`
		TS      string `json:"ts"`
		Attempt int    `json:"attempt"`
	} `json:"history"`
	Refs map[string]any `json:"refs"`
}

// Status returns where a job is in its lifecycle.
func (j Jobs) Status(ctx context.Context, jobID string) (*JobStatus, error) {
	var out JobStatus
	return &out, j.c.Call(ctx, "jobs.status", map[string]any{"job_id": jobID}, &out)
}

// JobResult is the reply to `jobs.result` and the final frame of `jobs.wait`.
type JobResult struct {
	JobID    string            `json:"job_id"`
	Status   string            `json:"status"` // succeeded, failed, aborted
	Commit   string            `json:"commit"`
	Verified bool              `json:"verified"` // the Proof-of-Execution was checked
	Trailers map[string]string `json:"trailers"`
	PoE      map[string]any    `json:"poe"`
	// Outputs by name: UTF-8 text (string), {"base64": …} or a blob pointer.
	Outputs map[string]any `json:"outputs"`
	Exit    map[string]any `json:"exit"`
	Aborted map[string]any `json:"aborted"`
	// TimedOut is set by Wait when its timeout passed first (State says where the job is).
	TimedOut bool   `json:"timed_out"`
	State    string `json:"state"`
}

// Stdout is the job's standard output when it is inline text.
func (r *JobResult) Stdout() string {
	s, _ := r.Outputs["stdout"].(string)
	return s
}

// Result returns a finished job's result (ErrJobNotFound before it has one).
func (j Jobs) Result(ctx context.Context, jobID string) (*JobResult, error) {
	var out JobResult
	return &out, j.c.Call(ctx, "jobs.result", map[string]any{"job_id": jobID}, &out)
}

// Wait waits for a job's result; timeout 0 waits as long as ctx allows. onState,
// when set, is called at each state change before the end (pending, claimed).
func (j Jobs) Wait(ctx context.Context, jobID string, timeout time.Duration, onState func(state string)) (*JobResult, error) {
	fields := map[string]any{"job_id": jobID}
	if timeout > 0 {
		fields["timeout_ms"] = millis(timeout)
	}
	stream, err := j.c.Stream("jobs.wait", fields)
	if err != nil {
		return nil, err
	}
	defer stream.Close()
	for {
		frame, final, err := stream.Next(ctx)
		if err != nil {
			return nil, err
		}
		var out JobResult
		if err := frame.Decode(&out); err != nil {
			return nil, &Error{Code: "BAD_REPLY", Reason: err.Error()}
		}
		if final {
			return &out, nil
		}
		if onState != nil && out.State != "" {
			onState(out.State)
		}
	}
}

// Cancel aborts a job that has no result yet (ErrJobFinished otherwise).
func (j Jobs) Cancel(ctx context.Context, jobID, reason string) (*JobResult, error) {
	var out struct {
		State  string    `json:"state"`
		Result JobResult `json:"result"`
	}
	if err := j.c.Call(ctx, "jobs.cancel", map[string]any{"job_id": jobID, "reason": reason}, &out); err != nil {
		return nil, err
	}
	return &out.Result, nil
}
