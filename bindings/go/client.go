package gatos

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"
)

// Options say where a daemon listens. Set exactly one of Socket and Address.
type Options struct {
	// Socket is the path of the daemon's unix socket (default of a node:
	// .git/gatos/gatosd.sock).
	Socket string
	// Address is the loopback TCP "host:port" of a daemon started with --listen.
	Address string
	// Token is the bearer token of a TCP daemon (--token-file); sent with the
	// first request (hello), as the protocol requires.
	Token string
	// DialTimeout bounds connecting and the hello exchange when ctx has no deadline
	// (default 10s).
	DialTimeout time.Duration
}

// Client is one connection to gatosd. It is safe for concurrent use: requests are
// pipelined on the connection and replies are matched by id. Pings from the daemon
// are answered by the client, so idle connections and long waits stay open.
type Client struct {
	conn  net.Conn
	hello Hello

	wmu sync.Mutex // serializes writes

	mu      sync.Mutex
	calls   map[string]*call
	nextID  uint64
	closed  error // set once: why the connection ended
	closing error // an anonymous error frame that explains the coming close
	pongs   chan struct{}
	done    chan struct{}
}

// Dial connects to a daemon and says hello. The returned client's Hello holds the
// daemon's versions, limits and methods.
func Dial(ctx context.Context, opts Options) (*Client, error) {
	if _, ok := ctx.Deadline(); !ok {
		timeout := opts.DialTimeout
		if timeout == 0 {
			timeout = 10 * time.Second
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	var d net.Dialer
	var conn net.Conn
	var err error
	switch {
	case opts.Socket != "" && opts.Address == "":
		conn, err = d.DialContext(ctx, "unix", opts.Socket)
	case opts.Address != "" && opts.Socket == "":
		conn, err = d.DialContext(ctx, "tcp", opts.Address)
	default:
		return nil, errors.New("gatos: set exactly one of Options.Socket and Options.Address")
	}
	if err != nil {
		return nil, err
	}
	c := &Client{conn: conn, calls: map[string]*call{}, pongs: make(chan struct{}, 64), done: make(chan struct{})}
	go c.readLoop()
	fields := map[string]any{}
	if opts.Token != "" {
		fields["token"] = opts.Token
	}
	if err := c.Call(ctx, "hello", fields, &c.hello); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Hello is what the daemon said about itself when the client connected.
func (c *Client) Hello() Hello { return c.hello }

// Close ends the connection; requests still waiting fail with ErrConnectionClosed.
func (c *Client) Close() error {
	err := c.conn.Close()
	<-c.done
	return err
}

// Done is closed when the connection has ended.
func (c *Client) Done() <-chan struct{} { return c.done }

// Frame is one JSON reply frame, as sent by the daemon.
type Frame json.RawMessage

// Decode unmarshals the frame into v; numbers in `any` fields become json.Number,
// so 64-bit integers keep every digit.
func (f Frame) Decode(v any) error {
	dec := json.NewDecoder(bytes.NewReader(f))
	dec.UseNumber()
	return dec.Decode(v)
}

// MarshalJSON makes a Frame embed as its raw JSON.
func (f Frame) MarshalJSON() ([]byte, error) { return json.RawMessage(f).MarshalJSON() }

type head struct {
	Kind  string          `json:"kind"`
	ID    json.RawMessage `json:"id"`
	OK    *bool           `json:"ok"`
	Ack   bool            `json:"ack"`
	Error *struct {
		Code   string `json:"code"`
		Reason string `json:"reason"`
		Rule   string `json:"rule"`
	} `json:"error"`
}

// call is one request in flight: an unbounded queue of its frames, so a slow
// reader of one stream never stalls the connection's other replies.
type call struct {
	id     string
	mu     sync.Mutex
	frames [][]byte
	err    error
	signal chan struct{}
}

func (k *call) push(frame []byte) {
	k.mu.Lock()
	k.frames = append(k.frames, frame)
	k.mu.Unlock()
	select {
	case k.signal <- struct{}{}:
	default:
	}
}

func (k *call) fail(err error) {
	k.mu.Lock()
	if k.err == nil {
		k.err = err
	}
	k.mu.Unlock()
	select {
	case k.signal <- struct{}{}:
	default:
	}
}

// next returns the call's next frame, waiting for it.
func (k *call) next(ctx context.Context) ([]byte, error) {
	for {
		k.mu.Lock()
		if len(k.frames) > 0 {
			f := k.frames[0]
			k.frames = k.frames[1:]
			k.mu.Unlock()
			return f, nil
		}
		err := k.err
		k.mu.Unlock()
		if err != nil {
			return nil, err
		}
		select {
		case <-k.signal:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (c *Client) write(frame any) error {
	data, err := json.Marshal(frame)
	if err != nil {
		return err
	}
	data = append(data, '\n')
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
	_, err = c.conn.Write(data)
	return err
}

// start registers a request and sends it.
func (c *Client) start(typ string, fields map[string]any) (*call, error) {
	c.mu.Lock()
	if c.closed != nil {
		err := c.closed
		c.mu.Unlock()
		return nil, err
	}
	c.nextID++
	k := &call{id: "g" + strconv.FormatUint(c.nextID, 10), signal: make(chan struct{}, 1)}
	c.calls[k.id] = k
	c.mu.Unlock()
	frame := make(map[string]any, len(fields)+2)
	for name, value := range fields {
		frame[name] = value
	}
	frame["type"], frame["id"] = typ, k.id
	if err := c.write(frame); err != nil {
		c.finish(k)
		return nil, &Error{Code: "CONNECTION_CLOSED", Reason: "writing the request: " + err.Error()}
	}
	return k, nil
}

func (c *Client) finish(k *call) {
	c.mu.Lock()
	delete(c.calls, k.id)
	c.mu.Unlock()
}

// Request sends a request and waits for its final frame, skipping `ack` and
// progress frames. An error frame comes back as *Error.
func (c *Client) Request(ctx context.Context, typ string, fields map[string]any) (Frame, error) {
	k, err := c.start(typ, fields)
	if err != nil {
		return nil, err
	}
	defer c.finish(k)
	for {
		raw, err := k.next(ctx)
		if err != nil {
			return nil, err
		}
		final, err := finalFrame(raw, k.id)
		if final || err != nil {
			return raw, err
		}
	}
}

// Call is Request that decodes the final frame into out (when out is not nil).
func (c *Client) Call(ctx context.Context, typ string, fields map[string]any, out any) error {
	frame, err := c.Request(ctx, typ, fields)
	if err != nil || out == nil {
		return err
	}
	if err := frame.Decode(out); err != nil {
		return &Error{Code: "BAD_REPLY", Reason: fmt.Sprintf("%s reply: %v", typ, err)}
	}
	return nil
}

// finalFrame says whether raw ends its request, and turns a failure into *Error.
func finalFrame(raw []byte, id string) (bool, error) {
	var h head
	if err := json.Unmarshal(raw, &h); err != nil {
		return true, &Error{Code: "BAD_REPLY", Reason: err.Error(), RequestID: id}
	}
	if h.OK == nil {
		return false, nil
	}
	if *h.OK {
		return true, nil
	}
	if h.Error == nil {
		return true, &Error{Code: "BAD_REPLY", Reason: "failure frame without an error object", RequestID: id}
	}
	code := h.Error.Code
	if code == "" {
		code = "INTERNAL"
	}
	return true, &Error{Code: code, Reason: h.Error.Reason, Rule: h.Error.Rule, RequestID: id}
}

// Stream is a request answered by several frames (`bus.subscribe`, `jobs.wait`,
// `verify`, `fold_state`, long `journal.read`).
type Stream struct {
	c     *Client
	k     *call
	ended bool
}

// Stream sends a request whose reply comes in several frames; read them with Next.
func (c *Client) Stream(typ string, fields map[string]any) (*Stream, error) {
	k, err := c.start(typ, fields)
	if err != nil {
		return nil, err
	}
	return &Stream{c: c, k: k}, nil
}

// ID is the request id of the stream (what `bus.unsubscribe` names).
func (s *Stream) ID() string { return s.k.id }

// Next returns the next frame. final is true for the last one (the ok frame); an
// error frame ends the stream as *Error. After the end, Next returns io.EOF.
func (s *Stream) Next(ctx context.Context) (frame Frame, final bool, err error) {
	if s.ended {
		return nil, true, io.EOF
	}
	raw, err := s.k.next(ctx)
	if err != nil {
		if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			s.end()
		}
		return nil, true, err
	}
	final, err = finalFrame(raw, s.k.id)
	if final {
		s.end()
	}
	return raw, final, err
}

// Close stops waiting for the stream's frames (the request may still run on the
// daemon; to end a subscription use Subscription.Close).
func (s *Stream) Close() { s.end() }

func (s *Stream) end() {
	if !s.ended {
		s.ended = true
		s.c.finish(s.k)
	}
}

// Ping sends a keep-alive ping and waits for its pong.
func (c *Client) Ping(ctx context.Context) error {
	if err := c.write(map[string]string{"kind": "ping"}); err != nil {
		return err
	}
	select {
	case <-c.pongs:
		return nil
	case <-c.done:
		return c.closedErr()
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Client) closedErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

func (c *Client) readLoop() {
	reader := bufio.NewReaderSize(c.conn, 1<<16)
	var cause error
	for {
		line, err := reader.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 && err == nil {
			if rerr := c.route(line); rerr != nil {
				cause = rerr
				break
			}
		}
		if err != nil {
			cause = &Error{Code: "CONNECTION_CLOSED", Reason: "the daemon closed the connection"}
			if !errors.Is(err, io.EOF) {
				cause = &Error{Code: "CONNECTION_CLOSED", Reason: err.Error()}
			}
			break
		}
	}
	c.mu.Lock()
	if c.closing != nil {
		cause = c.closing
	}
	c.closed = cause
	for _, k := range c.calls {
		k.fail(cause)
	}
	c.mu.Unlock()
	c.conn.Close()
	close(c.done)
}

func (c *Client) route(line []byte) error {
	var h head
	if err := json.Unmarshal(line, &h); err != nil {
		return &Error{Code: "BAD_REPLY", Reason: "the daemon sent a line that is not a JSON object: " + err.Error()}
	}
	switch h.Kind {
	case "ping":
		go c.write(map[string]string{"kind": "pong"}) //nolint:errcheck // a failed pong shows as a closed connection
		return nil
	case "pong":
		select {
		case c.pongs <- struct{}{}:
		default:
		}
		return nil
	}
	var id string
	if err := json.Unmarshal(h.ID, &id); err != nil || len(h.ID) == 0 {
		// `"id": null` error frames: a dropped over-long line, or a refusal
		// (BUSY, UNAUTHORIZED) before the connection is closed.
		if h.OK != nil && !*h.OK {
			c.routeAnonymous(line, h)
		}
		return nil
	}
	c.mu.Lock()
	k := c.calls[id]
	c.mu.Unlock()
	if k != nil {
		k.push(append([]byte(nil), line...))
	}
	return nil
}

func (c *Client) routeAnonymous(line []byte, h head) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.calls) == 1 {
		for _, k := range c.calls {
			k.push(append([]byte(nil), line...))
		}
		return
	}
	_, err := finalFrame(line, "")
	c.closing = err
}
