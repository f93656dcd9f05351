package sse

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"slices"
	"time"

	"github.com/herald-sse/herald/pkg/broker"
)

// ResetEventType is the event type of the reset event: the stream could not
// resume a topic exactly where the client's cursor said (history trimmed or
// lost, another epoch, an unknown cursor). Its data is JSON
// {"topic": "...", "reason": "truncated" | "epoch" | "unknown-cursor"}; the
// stream then continues with what the history still holds, in order.
const ResetEventType = "herald.reset"

// DefaultMaxTopics is the default cap on topics per stream.
const DefaultMaxTopics = 16

// Metrics receives a TopicHandler's events, for counters and histograms.
// Methods are called from stream goroutines and must be cheap and
// non-blocking.
type Metrics interface {
	// StreamOpened: a stream started (its headers are about to be sent).
	StreamOpened()
	// StreamClosed: a stream ended; reason is "client" (the client went
	// away), "slow" (it fell behind its queue limit or a write timed out),
	// "drain" (the handler drained), "broker" (the subscription ended on the
	// broker's side) or "error".
	StreamClosed(reason string)
	// Delivered: a live event was written to one connection; now is the
	// time of the write. ev.Time is the publish time (zero if unknown).
	Delivered(ev *broker.Event, now time.Time)
	// Replayed: n events from history were written to one connection.
	Replayed(n int)
	// Reset: a reset event was sent for topic.
	Reset(topic, reason string)
}

// TopicHandler serves GET ?topic=a[&topic=b...] as one event stream backed by
// a Broker. It answers 400 for invalid topics or a malformed Last-Event-ID,
// 405 for other methods, 503 at the connection cap, while draining, or when
// the broker refuses the subscription.
//
// Every event carries an id that resumes the stream in all its topics: the
// event's own ID on a one-topic stream, a composite cursor on a multi-topic
// stream. Before the first event, an id-only block gives the client its
// starting position, so a client that reconnects before any event still
// misses nothing.
//
// Configure it before the first request; it is safe for concurrent use
// afterwards.
type TopicHandler struct {
	// Broker is the source of events. Required.
	Broker broker.Broker
	// OnConnect runs after the request was validated and before
	// subscribing: authentication and authorisation belong here. nil means
	// DefaultOnConnect.
	OnConnect OnConnect
	// Heartbeat is the comment interval; 0 means DefaultHeartbeat,
	// negative disables heartbeats. Keep it below every idle timeout on the
	// path (load balancers, proxies).
	Heartbeat time.Duration
	// WriteTimeout bounds each write to a client; a client that does not
	// take its bytes in time is disconnected (it resumes from its cursor).
	// 0 means DefaultWriteTimeout.
	WriteTimeout time.Duration
	// MaxTopics caps the topics of one stream; 0 means DefaultMaxTopics.
	MaxTopics int
	// MaxConnections caps concurrent streams (503 + Retry-After beyond);
	// existing streams are never evicted. 0 means no cap.
	MaxConnections int
	// MaxCursorLen caps Last-Event-ID in bytes; 0 means
	// DefaultMaxCursorLen, raised if needed to fit MaxTopics positions.
	MaxCursorLen int
	// Metrics, if set, is told about streams and deliveries.
	Metrics Metrics
	// Logger receives stream-level logs; nil means slog.Default().
	Logger *slog.Logger

	lc lifecycle
}

// Drain makes the handler refuse new streams (503 + Retry-After, which a
// load balancer retries on another replica), tells every open stream's
// client to reconnect after about retry (jittered), ends the streams and
// waits until all ended or ctx is done. Draining is final.
func (h *TopicHandler) Drain(ctx context.Context, retry time.Duration) error {
	h.lc.init(h.Heartbeat)
	return h.lc.drain(ctx, retry)
}

// Connections returns the number of open streams.
func (h *TopicHandler) Connections() int { return int(h.lc.active.Load()) }

func (h *TopicHandler) logger() *slog.Logger {
	if h.Logger != nil {
		return h.Logger
	}
	return slog.Default()
}

func (h *TopicHandler) maxTopics() int {
	if h.MaxTopics > 0 {
		return h.MaxTopics
	}
	return DefaultMaxTopics
}

func (h *TopicHandler) maxCursorLen() int {
	if h.MaxCursorLen > 0 {
		return h.MaxCursorLen
	}
	return max(DefaultMaxCursorLen, 4+h.maxTopics()*(broker.MaxIDLen+1))
}

// canonicalTopics sorts and deduplicates topics in place.
func canonicalTopics(topics []string) []string {
	slices.Sort(topics)
	return slices.Compact(topics)
}

// requestTopics returns the request's topics, sorted and unique, or an
// error that is safe to show the client.
func (h *TopicHandler) requestTopics(r *http.Request) ([]string, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, fmt.Errorf("malformed query string: %v", err)
	}
	topics := q["topic"]
	if len(topics) == 0 {
		return nil, errors.New("missing topic: use ?topic=NAME (repeat it for several topics)")
	}
	topics = canonicalTopics(topics)
	if len(topics) > h.maxTopics() {
		return nil, fmt.Errorf("too many topics: %d, the limit is %d", len(topics), h.maxTopics())
	}
	for _, t := range topics {
		if err := broker.ValidateTopic(t); err != nil {
			return nil, err
		}
	}
	return topics, nil
}

// ServeHTTP implements http.Handler.
func (h *TopicHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.lc.init(h.Heartbeat)
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		http.Error(w, "method not allowed: subscribe with GET", http.StatusMethodNotAllowed)
		return
	}
	topics, err := h.requestTopics(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	lastID := lastEventID(r)
	if err := checkCursor(lastID, h.maxCursorLen()); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if !connect(w, r, h.OnConnect) {
		return
	}
	if !h.lc.admit(w, h.MaxConnections) {
		return
	}
	defer h.lc.release()

	start := time.Now()
	sub, err := h.Broker.Subscribe(r.Context(), topics, parseCursor(topics, lastID))
	if err != nil {
		switch {
		case errors.Is(err, broker.ErrInvalidTopic):
			http.Error(w, err.Error(), http.StatusBadRequest)
		case r.Context().Err() != nil:
			// The client is gone; nobody reads the answer.
		default:
			h.logger().Warn("sse: subscribe failed", "topics", topics, "err", err)
			w.Header().Set("Retry-After", "1")
			http.Error(w, "cannot subscribe now, retry later", http.StatusServiceUnavailable)
		}
		return
	}
	defer sub.Close()

	c := &topicConn{
		h:       h,
		w:       w,
		rc:      http.NewResponseController(w),
		topics:  topics,
		pos:     make([]string, len(topics)),
		start:   start,
		timeout: h.WriteTimeout,
	}
	if c.timeout == 0 {
		c.timeout = DefaultWriteTimeout
	}
	c.sent = append(c.sent, lastID...)
	if h.Metrics != nil {
		h.Metrics.StreamOpened()
	}
	reason := c.run(r, sub)
	if h.Metrics != nil {
		h.Metrics.StreamClosed(reason)
	}
}

// topicConn is the state of one topic stream. Only the handler goroutine
// touches it.
type topicConn struct {
	h       *TopicHandler
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	topics  []string // sorted, unique
	pos     []string // pos[i]: last position of topics[i] known to this stream
	start   time.Time
	sent    []byte // the id the client holds now
	idbuf   []byte // scratch for composite ids and small frames
	posMove bool   // a KindPosition moved pos since the last id written
}

func (c *topicConn) run(r *http.Request, sub broker.Subscription) string {
	c.w.WriteHeader(http.StatusOK)
	if err := c.rc.Flush(); err != nil {
		return "client"
	}
	lc := &c.h.lc
	slot := lc.joinHeartbeat()
	defer lc.leaveHeartbeat()
	var items []*broker.Event
	for {
		select {
		case <-sub.Ready():
			var err error
			items, err = sub.Take(items[:0])
			if len(items) > 0 {
				if werr := c.deliver(items); werr != nil {
					clear(items)
					return writeReason(werr)
				}
				clear(items) // don't pin events in the reused slice
			}
			if err != nil {
				return c.subscriptionEnded(r, err)
			}
		case <-lc.heartbeat(slot):
			if err := c.write([]byte(":\n\n")); err != nil {
				return writeReason(err)
			}
		case <-lc.drainCh:
			_ = c.write(appendRetryHint(nil, lc.drainRetry()))
			return "drain"
		case <-r.Context().Done():
			return "client"
		}
	}
}

func (c *topicConn) subscriptionEnded(r *http.Request, err error) string {
	switch {
	case r.Context().Err() != nil:
		return "client"
	case errors.Is(err, broker.ErrSlowConsumer):
		c.h.logger().Info("sse: disconnecting a slow client", "topics", c.topics, "remote", r.RemoteAddr)
		return "slow"
	default:
		c.h.logger().Warn("sse: subscription ended", "topics", c.topics, "err", err)
		return "broker"
	}
}

func writeReason(err error) string {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return "slow"
	}
	return "client"
}

// write sends one block and flushes it under a fresh deadline.
func (c *topicConn) write(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	c.deadline()
	if _, err := c.w.Write(b); err != nil {
		return err
	}
	return c.rc.Flush()
}

func (c *topicConn) deadline() {
	// A fresh deadline per batch also overrides a server-wide WriteTimeout
	// that would otherwise cut long streams. ErrNotSupported is not fatal.
	_ = c.rc.SetWriteDeadline(time.Now().Add(c.timeout))
}

func (c *topicConn) index(topic string) int {
	for i, t := range c.topics {
		if t == topic {
			return i
		}
	}
	return -1
}

// deliver writes a batch of items with one deadline and one flush.
func (c *topicConn) deliver(items []*broker.Event) error {
	c.deadline()
	m := c.h.Metrics
	var now time.Time
	if m != nil {
		now = time.Now()
	}
	replayed := 0
	single := len(c.topics) == 1
	for _, ev := range items {
		i := c.index(ev.Topic)
		if i < 0 {
			continue // not ours; a broker bug, but never a wire problem
		}
		switch ev.Kind {
		case broker.KindEvent:
			c.pos[i] = ev.ID
			frame := ev.Memo(encodeBrokerEvent)
			if single {
				if _, err := c.w.Write(frame); err != nil {
					return err
				}
				c.sent = append(c.sent[:0], ev.ID...)
			} else {
				c.idbuf = append(c.idbuf[:0], "id: "...)
				c.idbuf = appendCursor(c.idbuf, c.pos)
				c.idbuf = append(c.idbuf, '\n')
				if _, err := c.w.Write(c.idbuf); err != nil {
					return err
				}
				if _, err := c.w.Write(frameBody(frame)); err != nil {
					return err
				}
				c.sent = append(c.sent[:0], c.idbuf[4:len(c.idbuf)-1]...)
			}
			c.posMove = false
			if m != nil {
				if !ev.Time.IsZero() && ev.Time.Before(c.start) {
					replayed++
				} else {
					m.Delivered(ev, now)
				}
			}
		case broker.KindPosition:
			if c.pos[i] != ev.ID {
				c.pos[i] = ev.ID
				c.posMove = true
			}
		case broker.KindReset:
			c.idbuf = appendReset(c.idbuf[:0], ev.Topic, ev.Reason)
			if _, err := c.w.Write(c.idbuf); err != nil {
				return err
			}
			if m != nil {
				m.Reset(ev.Topic, ev.Reason)
			}
		}
	}
	if c.posMove {
		c.posMove = false
		c.idbuf = appendCursor(c.idbuf[:0], c.pos)
		if len(c.idbuf) > 0 && !bytes.Equal(c.idbuf, c.sent) {
			c.sent = append(c.sent[:0], c.idbuf...)
			c.idbuf = append(append(append(c.idbuf[:0], "id: "...), c.sent...), '\n', '\n')
			if _, err := c.w.Write(c.idbuf); err != nil {
				return err
			}
		}
	}
	if replayed > 0 {
		m.Replayed(replayed)
	}
	return c.rc.Flush()
}

// encodeBrokerEvent is the memoised wire form of a broker event: its own id
// line (what a one-topic stream sends as is), then the event and data
// lines. Multi-topic streams skip the id line and write their composite
// cursor instead. Brokers validate IDs and types, so encoding cannot fail;
// a bad one would be written without the offending field rather than
// injecting one.
func encodeBrokerEvent(ev *broker.Event) []byte {
	e := Event{ID: ev.ID, Type: ev.Type, Data: ev.Data}
	b, err := AppendEvent(make([]byte, 0, 16+len(ev.ID)+len(ev.Type)+len(ev.Data)), &e)
	if err != nil {
		e.ID, e.Type = "", ""
		b, _ = AppendEvent(b[:0], &e)
	}
	return b
}

// frameBody returns a memoised frame without its leading id line.
func frameBody(frame []byte) []byte {
	if bytes.HasPrefix(frame, []byte("id: ")) {
		return frame[bytes.IndexByte(frame, '\n')+1:]
	}
	return frame
}

func appendReset(dst []byte, topic, reason string) []byte {
	data, _ := json.Marshal(struct {
		Topic  string `json:"topic"`
		Reason string `json:"reason"`
	}{topic, reason})
	dst = append(dst, "event: "+ResetEventType+"\ndata: "...)
	dst = append(dst, data...)
	return append(dst, '\n', '\n')
}
