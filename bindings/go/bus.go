package gatos

import (
	"context"
	"errors"
	"io"
	"iter"
)

// Bus holds the message-plane methods: c.Bus().Publish, Subscribe, Ack, Nack.
type Bus struct{ c *Client }

// Bus returns the message-plane methods of the connection.
func (c *Client) Bus() Bus { return Bus{c} }

// PublishOptions are the optional fields of `bus.publish`.
type PublishOptions struct {
	Key     string
	ULID    string // idempotency key: publishing the same ULID again is a duplicate
	Headers map[string]string
}

// PublishResult is the reply to `bus.publish`.
type PublishResult struct {
	Topic     string `json:"topic"`
	Shard     int    `json:"shard"`
	Position  int64  `json:"position"`
	ULID      string `json:"ulid"`
	Commit    string `json:"commit"`
	Duplicate bool   `json:"duplicate"`
}

// Publish sends one message; the reply comes after the message's commit is on its ref.
func (b Bus) Publish(ctx context.Context, topic string, payload any, opts *PublishOptions) (*PublishResult, error) {
	value, err := Normalize(payload)
	if err != nil {
		return nil, err
	}
	fields := map[string]any{"topic": topic, "payload": value}
	if opts != nil {
		if opts.Key != "" {
			fields["key"] = opts.Key
		}
		if opts.ULID != "" {
			fields["ulid"] = opts.ULID
		}
		if opts.Headers != nil {
			fields["headers"] = opts.Headers
		}
	}
	var out PublishResult
	return &out, b.c.Call(ctx, "bus.publish", fields, &out)
}

// SubscribeOptions are the optional fields of `bus.subscribe`.
type SubscribeOptions struct {
	// From is "earliest", "HEAD", "HEAD-<n>", a position or a ULID (default: the
	// daemon's, which is HEAD: new messages only).
	From        string
	Group       string // consumer group: messages are shared and must be acked
	AckWaitMS   int64
	MaxInFlight int
	MaxDeliver  int
}

// Message is one delivered `bus.message`.
type Message struct {
	Topic     string            `json:"topic"`
	Shard     int               `json:"shard"`
	Position  int64             `json:"position"`
	ULID      string            `json:"ulid"`
	Key       string            `json:"key"`
	Headers   map[string]string `json:"headers"`
	Publisher string            `json:"publisher"`
	Commit    string            `json:"commit"`
	Payload   any               `json:"payload"`
	Delivery  int               `json:"delivery"` // 1 on first delivery, more on redelivery
	Group     string            `json:"group"`
}

// Subscription is a running `bus.subscribe`. Read it with Next or range over All;
// Close unsubscribes.
type Subscription struct {
	b      Bus
	stream *Stream
	group  string
	// Delivered is the daemon's count once the subscription has ended.
	Delivered int64
}

// Subscribe starts a subscription to topic.
func (b Bus) Subscribe(ctx context.Context, topic string, opts *SubscribeOptions) (*Subscription, error) {
	fields := map[string]any{"topic": topic}
	group := ""
	if opts != nil {
		if opts.From != "" {
			fields["from"] = opts.From
		}
		if opts.Group != "" {
			fields["group"], group = opts.Group, opts.Group
		}
		if opts.AckWaitMS > 0 {
			fields["ack_wait_ms"] = opts.AckWaitMS
		}
		if opts.MaxInFlight > 0 {
			fields["max_in_flight"] = opts.MaxInFlight
		}
		if opts.MaxDeliver > 0 {
			fields["max_deliver"] = opts.MaxDeliver
		}
	}
	stream, err := b.c.Stream("bus.subscribe", fields)
	if err != nil {
		return nil, err
	}
	sub := &Subscription{b: b, stream: stream, group: group}
	// The daemon acks the subscription (or refuses it) at once: report a refusal here.
	frame, final, err := stream.Next(ctx)
	if err != nil {
		return nil, err
	}
	if final {
		sub.finish(frame)
		return nil, &Error{Code: "BAD_REPLY", Reason: "the subscription ended at once"}
	}
	return sub, nil
}

func (s *Subscription) finish(frame Frame) {
	var end struct {
		Delivered int64 `json:"delivered"`
	}
	if frame.Decode(&end) == nil {
		s.Delivered = end.Delivered
	}
}

// Next waits for the next message. It returns io.EOF once the subscription ended.
func (s *Subscription) Next(ctx context.Context) (*Message, error) {
	for {
		frame, final, err := s.stream.Next(ctx)
		if err != nil {
			return nil, err
		}
		if final {
			s.finish(frame)
			return nil, io.EOF
		}
		var m struct {
			Type string `json:"type"`
			Message
		}
		if err := frame.Decode(&m); err != nil {
			return nil, &Error{Code: "BAD_REPLY", Reason: err.Error()}
		}
		if m.Type == "bus.message" {
			return &m.Message, nil
		}
	}
}

// All ranges over the messages until ctx ends, the subscription ends or an error
// (yielded once, last): for msg, err := range sub.All(ctx) { … }.
func (s *Subscription) All(ctx context.Context) iter.Seq2[*Message, error] {
	return func(yield func(*Message, error) bool) {
		for {
			m, err := s.Next(ctx)
			if errors.Is(err, io.EOF) {
				return
			}
			if !yield(m, err) || err != nil {
				return
			}
		}
	}
}

// Ack acknowledges a message of this subscription's group.
func (s *Subscription) Ack(ctx context.Context, m *Message) error {
	_, err := s.b.Ack(ctx, s.group, m)
	return err
}

// Close unsubscribes and waits for the subscription's last frame.
func (s *Subscription) Close(ctx context.Context) error {
	if s.stream.ended {
		return nil
	}
	_, err := s.b.c.Request(ctx, "bus.unsubscribe", map[string]any{"subscription": s.stream.ID()})
	if err != nil {
		s.stream.Close()
		return err
	}
	for {
		if _, err := s.Next(ctx); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			s.stream.Close()
			return err
		}
	}
}

// AckResult is the reply to `bus.ack` / `bus.nack`.
type AckResult struct {
	Shard    int   `json:"shard"`
	Position int64 `json:"position"`
	Acked    bool  `json:"acked"`
}

func ackFields(group string, m *Message) map[string]any {
	return map[string]any{"topic": m.Topic, "group": group, "ulid": m.ULID, "shard": m.Shard, "position": m.Position}
}

// Ack acknowledges a delivered message for a consumer group (after the ack commit).
func (b Bus) Ack(ctx context.Context, group string, m *Message) (*AckResult, error) {
	var out AckResult
	return &out, b.c.Call(ctx, "bus.ack", ackFields(group, m), &out)
}

// Nack gives a delivered message back for redelivery.
func (b Bus) Nack(ctx context.Context, group string, m *Message) (*AckResult, error) {
	var out AckResult
	return &out, b.c.Call(ctx, "bus.nack", ackFields(group, m), &out)
}
