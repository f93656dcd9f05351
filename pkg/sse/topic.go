package sse

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/sse/internal/rawconn"
)

// ResetEventType is the event type of the reset event: the stream could not
// resume a topic exactly where the client's cursor said (history trimmed or
// lost, another epoch, an unknown cursor). Its data is JSON
// {"topic": "...", "reason": "truncated" | "epoch" | "unknown-cursor" | "failover"}; the
// stream then continues with what the history still holds, in order.
const ResetEventType = "herald.reset"

// DefaultMaxTopics is the default cap on topics per stream.
const DefaultMaxTopics = 16

// TopicHandler serves GET ?topic=a[&topic=b...] as one event stream backed by
// a Broker. It answers 400 for invalid topics or a malformed Last-Event-ID,
// 405 for other methods, 503 at the connection cap, while draining or its
// http.Server shuts down, or when the broker refuses the subscription.
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
	// subscribing: authentication and authorisation belong here. A hook
	// may call ExpireAt(r, t) to end the stream when its credentials
	// expire. nil means DefaultOnConnect.
	OnConnect OnConnect
	// Heartbeat is the comment interval; 0 means DefaultHeartbeat,
	// negative disables heartbeats. Keep it below every idle timeout on the
	// path (load balancers, proxies).
	Heartbeat time.Duration
	// WriteTimeout bounds each write to a client; a client that does not
	// take its bytes in time is disconnected (it resumes from its cursor).
	// On a hijacked connection a write gets between half of it and all of
	// it (the deadline is moved lazily). 0 means DefaultWriteTimeout.
	WriteTimeout time.Duration
	// MaxTopics caps the topics of one stream; 0 means DefaultMaxTopics.
	MaxTopics int
	// MaxConnections caps concurrent streams (503 + Retry-After beyond);
	// existing streams are never evicted. 0 means no cap.
	MaxConnections int
	// MaxCursorLen caps Last-Event-ID in bytes; 0 means
	// DefaultMaxCursorLen, raised if needed to fit MaxTopics positions.
	MaxCursorLen int

	// Hijack turns on the fast path for HTTP/1.x streams, for servers
	// with many connections: once the hook has admitted a stream, the
	// handler takes the connection over (http.ResponseController.Hijack)
	// and serves the stream on it itself. That frees net/http's
	// per-request buffers and goroutine, and writes each batch with one
	// writev; on Linux, live events for idle streams are written by a
	// small pool of flushers with non-blocking writes and idle streams
	// hold no goroutine (see NoPublisherWrites and NoPark). On Linux a
	// TCP or Unix connection is then kept as a bare descriptor (its
	// net.Conn closed, Go's state for it freed): writes are writev(2),
	// and a write that would block waits for the socket through the same
	// epoll instance that notices departed peers.
	//
	// What the fast path bypasses:
	//   - net/http's response writing: the handler writes the status line
	//     and headers itself (HTTP/1.1 200, the hook's headers, Date,
	//     Connection: close; no chunked encoding: the body ends when the
	//     connection closes);
	//   - middleware around the handler: a wrapping ResponseWriter sees
	//     neither the status nor the bytes (access logs, response metrics,
	//     compression), and ServeHTTP returns as soon as the stream
	//     starts, so a middleware's "after" code (an access log line, a
	//     tracing span's end) runs then, not when the stream ends;
	//   - http.Server: Shutdown neither ends nor waits for the streams,
	//     and Close does not close them; call Drain first (which a
	//     graceful shutdown needs anyway). The request's context is not
	//     the stream's: a departed client is noticed on the socket.
	//
	// HTTP/2 streams, and ResponseWriters that cannot be hijacked, stay on
	// the ResponseWriter. false (the default): every stream is written
	// through the ResponseWriter, like any handler's response, and ends
	// when its http.Server shuts down (see Drain).
	Hijack bool
	// NoPublisherWrites, with Hijack, makes every stream write from its
	// own goroutine. By default, on a hijacked Linux TCP or Unix
	// connection, a live event queued for an idle stream is written by a
	// flusher (a small pool shared by all streams, one per P) with one
	// non-blocking writev, coalescing whatever queued meanwhile: no
	// goroutine of the stream wakes per event.
	NoPublisherWrites bool
	// NoPark, with Hijack, keeps a goroutine per stream while it is idle.
	// By default a stream that the flushers write (see NoPublisherWrites)
	// is parked after its response head: it holds no goroutine until
	// there is work (a replay, a write that would block, a heartbeat the
	// flusher could not finish, the end), which is most of what an idle
	// stream costs.
	NoPark bool
	// Metrics is told about streams and deliveries; the zero value
	// reports nothing.
	Metrics Metrics
	// Logger receives stream-level logs; nil means slog.Default().
	Logger *slog.Logger

	lc lifecycle
}

// Drain makes the handler refuse new streams (503 + Retry-After, which a
// load balancer retries on another replica), tells every open stream's
// client to reconnect after about retry (jittered), ends the streams and
// waits until all ended or ctx is done. Draining is final.
//
// Without Hijack, http.Server.Shutdown alone also ends the streams that
// server serves (without a retry hint; the handler registers with the
// server's RegisterOnShutdown on its first stream) and refuses new ones,
// so Shutdown returns once they ended. Hijacked streams are not the
// server's: only Drain ends them.
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
	return max(DefaultMaxCursorLen, MaxCursorLen(h.maxTopics()))
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
	for i, t := range topics {
		if err := broker.ValidateTopic(t); err != nil {
			return nil, err
		}
		// The stream keeps its topics: a copy, not a piece of the request
		// line (which the query's unescaping would otherwise keep alive).
		topics[i] = strings.Clone(t)
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
	var expiry *expirySlot
	if h.OnConnect != nil {
		r, expiry = withExpirySlot(r) // for ExpireAt
	}
	if !connect(w, r, h.OnConnect) {
		return
	}
	shutdown := h.lc.shutdownOf(r)
	if !h.lc.admit(w, h.MaxConnections, shutdown) {
		return
	}
	handedOff := false
	defer func() {
		if !handedOff {
			h.lc.release()
		}
	}()

	// The subscription lives as long as the stream, which may outlive this
	// call (see Hijack below), so its context is not the request's (which
	// would also keep net/http's connection state alive for the stream's
	// lifetime) but the stream's own (streamCtx); the request's
	// cancellation is forwarded while ServeHTTP runs.
	c := &topicStream{
		h:       h,
		topics:  topics,
		start:   time.Now().UnixNano(),
		timeout: h.WriteTimeout,
	}
	stopForward := context.AfterFunc(r.Context(), c.cancel)
	from := parseCursor(topics, lastID)
	sub, err := h.Broker.Subscribe(&c.ctx, topics, from)
	if err != nil {
		c.ctx.cancel()
		stopForward()
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

	handedOff = true // from here on, finish releases the slot
	c.sub = sub
	c.pos = make([]string, len(topics))
	c.tags = cursorTags(topics)
	c.expiry = expiry.expiry()
	if c.timeout == 0 {
		c.timeout = DefaultWriteTimeout
	}
	c.sent = append(c.sent, lastID...)
	// Until the broker reports a topic's position, the stream holds the one
	// the client sent: an event of another topic written before then must
	// carry it, not lose it.
	for i, t := range topics {
		c.pos[i] = from[t]
	}

	// HTTP/1.x: take the connection over and serve it from a fresh
	// goroutine, so the stream holds none of net/http's per-request state
	// (read and write buffers, a second goroutine watching for the client
	// going away, a deep stack); batches go out with one writev.
	if h.Hijack && r.ProtoMajor == 1 {
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			stopForward()
			c.out = connSink{rawconn.New(conn, c.cancel)}
			if h.Metrics.StreamOpened != nil {
				h.Metrics.StreamOpened()
			}
			go c.serveHijacked(w.Header())
			return
		}
	}
	defer stopForward()
	c.out = &responseSink{w: w, rc: http.NewResponseController(w), remote: r.RemoteAddr}
	if h.Metrics.StreamOpened != nil {
		h.Metrics.StreamOpened()
	}
	w.WriteHeader(http.StatusOK)
	reason := CloseClient
	if c.out.flush(nil, c.timeout) == nil {
		reason = c.run(shutdown)
	}
	c.finish(reason)
}
