package gatos

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testNode is what bindings/testnode.py prints: a live gatosd on a throw-away node.
type testNode struct {
	Repo   string `json:"repo"`
	Socket string `json:"socket"`
	TCP    string `json:"tcp"`
	Token  string `json:"token"`
	Owner  string `json:"owner"`
	JobNS  string `json:"job_ns"`
	Signer struct {
		Actor, Seed, PublicKey string
		KeyFile                string `json:"key_file"`
	} `json:"signer"`
	Denied struct {
		Actor   string
		KeyFile string `json:"key_file"`
	} `json:"denied"`
}

// startNode runs bindings/testnode.py (with $GATOS_PYTHON, default the repo's
// .venv) and stops it when the test ends by closing its stdin.
func startNode(t *testing.T) *testNode {
	t.Helper()
	python := os.Getenv("GATOS_PYTHON")
	if python == "" {
		python = filepath.Join("..", "..", ".venv", "bin", "python")
	}
	cmd := exec.Command(python, filepath.Join("..", "testnode.py"))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Skipf("cannot start the test node with %s: %v (set GATOS_PYTHON)", python, err)
	}
	t.Cleanup(func() {
		stdin.Close()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("testnode.py printed no connection line: %v", err)
	}
	var node testNode
	if err := json.Unmarshal([]byte(line), &node); err != nil {
		t.Fatalf("testnode.py: %v: %q", err, line)
	}
	return &node
}

func TestScenarioAgainstLiveDaemon(t *testing.T) {
	node := startNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()

	c, err := Dial(ctx, Options{Socket: node.Socket})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if h := c.Hello(); h.Protocol != 1 || h.Server != "gatosd" || h.Node.Actor != node.Owner {
		t.Fatalf("hello: %+v", h)
	}

	t.Run("tcp with token", func(t *testing.T) {
		tc, err := Dial(ctx, Options{Address: node.TCP, Token: node.Token})
		if err != nil {
			t.Fatal(err)
		}
		defer tc.Close()
		if _, err := tc.Status(ctx); err != nil {
			t.Fatal(err)
		}
		if err := tc.Ping(ctx); err != nil {
			t.Fatalf("keep-alive ping: %v", err)
		}
		_, err = Dial(ctx, Options{Address: node.TCP, Token: "wrong-token-0123456789"})
		if !errors.Is(err, ErrUnauthorized) {
			t.Fatalf("wrong token: %v, want UNAUTHORIZED", err)
		}
	})

	t.Run("append signed here, read back", func(t *testing.T) {
		key, err := LoadKeyFile(node.Signer.KeyFile)
		if err != nil {
			t.Fatal(err)
		}
		payload := map[string]any{"amount": uint64(18446744073709551615), "neg": -9223372036854775808,
			"text": "héllo 🐈", "nested": map[string]any{"list": []any{1, "two", nil, true}}}
		event := Event{Type: "invoice.created", Payload: payload, Caps: []string{"finance:append"}}.Complete(key)
		signed, err := event.Sign(key)
		if err != nil {
			t.Fatal(err)
		}
		res, err := c.AppendSignedEvent(ctx, "finance", signed)
		if err != nil {
			t.Fatal(err)
		}
		if res.Duplicate || res.Actor != node.Signer.Actor || res.EventCID != signed.CID {
			t.Fatalf("append: %+v", res)
		}
		again, err := c.AppendSignedEvent(ctx, "finance", signed)
		if err != nil || !again.Duplicate || again.Commit != res.Commit {
			t.Fatalf("replay: %+v %v", again, err)
		}
		entries, err := c.JournalRead(ctx, "finance", node.Signer.Actor, ReadOptions{Last: 1})
		if err != nil || len(entries) != 1 {
			t.Fatalf("read: %v %v", entries, err)
		}
		got := entries[0]
		if got.Commit != res.Commit || got.Sig != signed.Signature || got.EventCID != signed.CID || got.ULID != event.ULID {
			t.Fatalf("read back %+v", got)
		}
		// The stored event re-encodes to the bytes that were signed.
		back, err := got.Event.Canonical()
		if err != nil || string(back) != string(signed.Canonical) {
			t.Fatalf("read-back envelope encodes differently: %v", err)
		}
		head, err := c.JournalHead(ctx, "finance", node.Signer.Actor)
		if err != nil || head != res.Commit {
			t.Fatalf("head %s %v", head, err)
		}
	})

	t.Run("append signed by the node", func(t *testing.T) {
		res, err := c.AppendEvent(ctx, "finance", Event{Type: "note", Payload: map[string]any{"n": 1}})
		if err != nil || res.Actor != node.Owner || res.Duplicate {
			t.Fatalf("%+v %v", res, err)
		}
	})

	t.Run("publish, subscribe, ack", func(t *testing.T) {
		bus := c.Bus()
		sub, err := bus.Subscribe(ctx, "sdk/go", &SubscribeOptions{From: "earliest", Group: "workers"})
		if err != nil {
			t.Fatal(err)
		}
		for i := 1; i <= 2; i++ {
			if _, err := bus.Publish(ctx, "sdk/go", map[string]any{"n": i}, &PublishOptions{Key: "k"}); err != nil {
				t.Fatal(err)
			}
		}
		for i := 1; i <= 2; i++ {
			m, err := sub.Next(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if n := m.Payload.(map[string]any)["n"].(json.Number); n.String() != string(rune('0'+i)) {
				t.Fatalf("message %d: %+v", i, m)
			}
			if m.Publisher != node.Owner || m.Delivery != 1 {
				t.Fatalf("message %+v", m)
			}
			if err := sub.Ack(ctx, m); err != nil {
				t.Fatal(err)
			}
		}
		if err := sub.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if sub.Delivered != 2 {
			t.Fatalf("delivered %d", sub.Delivered)
		}
	})

	t.Run("enqueue a job and wait for its result", func(t *testing.T) {
		jobs := c.Jobs()
		job, err := jobs.Enqueue(ctx, node.JobNS, Manifest{Command: []string{"/bin/echo"},
			Args: []string{"hello from go", NewULID()}, Timeout: 30})
		if err != nil {
			t.Fatal(err)
		}
		var states []string
		result, err := jobs.Wait(ctx, job.JobID, 60*time.Second, func(s string) { states = append(states, s) })
		if err != nil {
			t.Fatal(err)
		}
		if result.Status != "succeeded" || !result.Verified || !strings.HasPrefix(result.Stdout(), "hello from go ") {
			t.Fatalf("result %+v (states %v)", result, states)
		}
		status, err := jobs.Status(ctx, job.JobID)
		if err != nil || status.State != "succeeded" {
			t.Fatalf("status %+v %v", status, err)
		}
	})

	t.Run("denied append is a typed policy error", func(t *testing.T) {
		key, err := LoadKeyFile(node.Denied.KeyFile)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.AppendSigned(ctx, "finance", Event{Type: "invoice.created", Payload: map[string]any{}}, key)
		var gerr *Error
		if !errors.Is(err, ErrPolicyDenied) || !errors.As(err, &gerr) || gerr.Rule == "" {
			t.Fatalf("got %v, want POLICY_DENY with a rule", err)
		}
	})

	t.Run("other error frames are typed", func(t *testing.T) {
		_, err := c.AppendEvent(ctx, "Fin/ance", Event{Type: "x", Payload: 1})
		if !errors.Is(err, ErrInvalidNamespace) || !errors.Is(err, ErrInvalidName) {
			t.Fatalf("got %v, want INVALID_NS", err)
		}
		if _, err := c.Request(ctx, "nope", nil); !errors.Is(err, ErrUnknownType) {
			t.Fatalf("got %v, want UNKNOWN_TYPE", err)
		}
		if _, err := c.Jobs().Status(ctx, "blake3:"+strings.Repeat("0", 64)); !errors.Is(err, ErrJobNotFound) || !errors.Is(err, ErrJob) {
			t.Fatalf("got %v, want JOB_NOT_FOUND", err)
		}
	})
}
