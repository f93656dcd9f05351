package sse

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"mime"
	"net/http"
	"sync"
	"time"
)

// DefaultRetry is the reconnection delay a Client starts with when its
// Retry field is not set, as in browsers.
const DefaultRetry = 3 * time.Second

// statusBodyLimit caps the body snippet kept in a StatusError.
const statusBodyLimit = 512

// A StatusError is the final answer of a server that did not open an event
// stream: a status other than 200, or a 200 whose Content-Type is not
// text/event-stream. Like a browser's EventSource, the Client does not
// reconnect after it. A 204 No Content is the server's way of saying "stop
// reconnecting".
type StatusError struct {
	StatusCode  int
	ContentType string
	// Body is the start of the response body (at most 512 bytes), for
	// diagnostics.
	Body string
}

func (e *StatusError) Error() string {
	if e.StatusCode == http.StatusOK {
		return fmt.Sprintf("sse: server answered with Content-Type %q, not text/event-stream", e.ContentType)
	}
	return fmt.Sprintf("sse: server answered %d %s", e.StatusCode, http.StatusText(e.StatusCode))
}

// A Client subscribes to an event stream and reconnects the way a browser's
// EventSource does: after each end of stream or network error it waits the
// reconnection delay (the server's retry field overrides Retry), then
// connects again sending the last event ID in the Last-Event-ID header.
//
// The zero value is ready to use. Set the fields before calling Subscribe
// and do not change them while it runs, except that Subscribe itself
// updates LastEventID. A Client runs one subscription at a time; Clients
// are cheap, so use one per stream and share the HTTPClient.
type Client struct {
	// HTTPClient makes the requests; nil means http.DefaultClient. It must
	// not have a Timeout, which would cut every stream after that time;
	// cancel Subscribe's context instead.
	HTTPClient *http.Client
	// Header holds extra request headers, such as Authorization. The
	// client sets Accept, Cache-Control and Last-Event-ID itself.
	Header http.Header
	// LastEventID is the last event ID sent on the first connection (none
	// when empty). Subscribe updates it as events and id fields arrive, so
	// a later Subscribe resumes where the previous one stopped; while
	// Subscribe runs, read it from other goroutines with LastID.
	LastEventID string
	// Retry is the initial reconnection delay; zero or negative means
	// DefaultRetry. A valid retry field from the server replaces it for
	// the rest of the subscription (a server may also set it to 0). Up to
	// a fifth of the delay is added at random, so that many clients cut
	// at once do not come back at once.
	Retry time.Duration
	// MaxRetries caps the number of consecutive attempts that fail to
	// open a stream (network errors before a 200 answer); after that many,
	// Subscribe returns the last error. Zero means no cap, like a browser.
	// A negative value disables reconnection: Subscribe returns after the
	// first connection ends, with io.EOF if the server ended the stream.
	MaxRetries int
	// MaxEventSize limits an event's data, in bytes (see
	// Decoder.MaxEventSize); zero means DefaultMaxEventSize. An event over
	// the limit ends Subscribe with ErrEventTooLarge.
	MaxEventSize int
	// IdleTimeout, if positive, treats a stream that sends nothing (not
	// even a heartbeat comment) for that long as broken, and reconnects.
	// Set it above the server's heartbeat interval.
	IdleTimeout time.Duration
	// OnOpen, if set, is called after each connection that opened a
	// stream, before its first event is read. Tests use it to know that
	// the server has registered the subscriber.
	OnOpen func(*http.Response)

	mu sync.Mutex // guards LastEventID
}

// LastID returns the current last event ID. It is safe to call while
// Subscribe runs, from any goroutine.
func (c *Client) LastID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.LastEventID
}

func (c *Client) setLastID(id string) {
	c.mu.Lock()
	c.LastEventID = id
	c.mu.Unlock()
}

// errIdle is the cause of a connection cut for IdleTimeout.
var errIdle = errors.New("sse: stream idle for longer than IdleTimeout")

// Subscribe connects to url and calls fn, on the calling goroutine, for
// each event received, until one of these happens:
//
//   - ctx is done: Subscribe returns ctx.Err();
//   - fn returns an error: Subscribe returns it as is;
//   - the server gives a final answer (any status but 200, or a 200 that is
//     not text/event-stream; 204 means "stop"): a *StatusError;
//   - an event is over MaxEventSize: ErrEventTooLarge;
//   - MaxRetries is reached, or reconnection is disabled.
//
// After a clean end of stream or a network error it reconnects after the
// reconnection delay, sending Last-Event-ID when the last event ID is not
// empty. The events fn sees carry the last event ID at their dispatch in
// ID, as in Decoder.Next. When Subscribe returns, it has closed every
// response body and left no goroutine behind.
func (c *Client) Subscribe(ctx context.Context, url string, fn func(Event) error) error {
	s := subscription{c: c, url: url, fn: fn, lastID: c.LastID(), retry: c.Retry}
	if s.retry <= 0 {
		s.retry = DefaultRetry
	}
	failures := 0
	for {
		opened, final, err := s.connect(ctx)
		if final {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err == nil {
			err = io.EOF
		}
		if c.MaxRetries < 0 {
			return err
		}
		if opened {
			failures = 0
		} else if failures++; c.MaxRetries > 0 && failures > c.MaxRetries {
			return fmt.Errorf("sse: giving up after %d failed attempts: %w", failures, err)
		}
		delay := s.retry
		if delay > 0 {
			if j := rand.N(delay/5 + 1); delay <= math.MaxInt64-j {
				delay += j
			}
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// subscription is the state of one Subscribe call.
type subscription struct {
	c      *Client
	url    string
	fn     func(Event) error
	lastID string
	retry  time.Duration
}

// connect makes one connection and reads events until it ends. opened
// reports whether a stream was opened, final whether err ends the
// subscription; a nil error means a clean end of stream.
func (s *subscription) connect(ctx context.Context) (opened, final bool, err error) {
	c := s.c
	cctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	req, err := http.NewRequestWithContext(cctx, http.MethodGet, s.url, nil)
	if err != nil {
		return false, true, err // a malformed URL will not get better
	}
	for k, v := range c.Header {
		req.Header[k] = v // shared, not modified: the Set and Del below replace entries
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	if s.lastID != "" {
		req.Header.Set("Last-Event-ID", s.lastID)
	} else {
		req.Header.Del("Last-Event-ID")
	}
	hc := c.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return false, false, err
	}
	defer resp.Body.Close()
	ct := resp.Header.Get("Content-Type")
	mt, _, _ := mime.ParseMediaType(ct)
	if resp.StatusCode != http.StatusOK || mt != "text/event-stream" {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, statusBodyLimit))
		return false, true, &StatusError{StatusCode: resp.StatusCode, ContentType: ct, Body: string(b)}
	}
	if c.OnOpen != nil {
		c.OnOpen(resp)
	}

	var body io.Reader = resp.Body
	if c.IdleTimeout > 0 {
		t := time.AfterFunc(c.IdleTimeout, func() { cancel(errIdle) })
		defer t.Stop()
		body = &idleReader{r: resp.Body, t: t, d: c.IdleTimeout}
	}
	dec := NewDecoder(body)
	dec.MaxEventSize = c.MaxEventSize
	dec.setLastEventID(s.lastID)
	for {
		ev, err := dec.Next()
		if dec.retrySet {
			s.retry = dec.retry
		}
		if id := dec.LastEventID(); id != s.lastID {
			s.lastID = id
			c.setLastID(id)
		}
		switch {
		case err == io.EOF:
			return true, false, nil
		case err != nil:
			return true, errors.Is(err, ErrEventTooLarge), err
		}
		if err := s.fn(ev); err != nil {
			return true, true, err
		}
	}
}

// idleReader pushes back the idle timer on every read that returns bytes.
type idleReader struct {
	r io.Reader
	t *time.Timer
	d time.Duration
}

func (r *idleReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if n > 0 {
		r.t.Reset(r.d)
	}
	return n, err
}
