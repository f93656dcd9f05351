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
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/sse/internal/netwatch"
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

// Metrics receives a TopicHandler's events, for counters and histograms.
// Every field is optional: a nil func is not called, so the zero value
// reports nothing, and a later release can add a field without breaking
// anyone. The funcs are called from the streams' goroutines and from the
// flushers that write live events (Delivered, Replayed, Reset), for many
// streams at once: they must be safe for concurrent use, cheap and
// non-blocking.
type Metrics struct {
	// StreamOpened: a stream started (its headers are about to be sent).
	StreamOpened func()
	// StreamClosed: a stream ended, and why.
	StreamClosed func(reason CloseReason)
	// Delivered: a live event was written to one connection; now is the
	// time of the write. ev.Time is the publish time (zero if unknown).
	Delivered func(ev *broker.Event, now time.Time)
	// Replayed: n events from history were written to one connection.
	// after is "" for events that follow the position the client resumed
	// from (its Last-Event-ID was honoured), else the reason of the reset
	// that preceded them on their topic (broker.ReasonTruncated, ...).
	Replayed func(n int, after broker.ResetReason)
	// Reset: a reset event was sent for topic.
	Reset func(topic string, reason broker.ResetReason)
}

// CloseReason says why a stream ended (Metrics.StreamClosed).
type CloseReason string

// The reasons a stream ends.
const (
	// CloseClient: the client went away, or a write to it failed.
	CloseClient CloseReason = "client"
	// CloseSlow: the client fell behind its queue limit, or a write to it
	// timed out; it resumes from its cursor when it reconnects.
	CloseSlow CloseReason = "slow"
	// CloseDrain: the handler drained, or the http.Server serving the
	// stream shut down.
	CloseDrain CloseReason = "drain"
	// CloseBroker: the subscription ended on the broker's side.
	CloseBroker CloseReason = "broker"
	// CloseExpired: the time the hook set with ExpireAt came.
	CloseExpired CloseReason = "expired"
)

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
	// hold no goroutine (see NoPublisherWrites and NoPark).
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
	return max(DefaultMaxCursorLen, maxCursorLen(h.maxTopics()))
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
	// lifetime); the request's cancellation is forwarded while ServeHTTP
	// runs.
	ctx, cancel := context.WithCancel(context.Background())
	stopForward := context.AfterFunc(r.Context(), cancel)
	start := time.Now()
	from := parseCursor(topics, lastID)
	sub, err := h.Broker.Subscribe(ctx, topics, from)
	if err != nil {
		cancel()
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
	c := &topicConn{
		h:       h,
		ctx:     ctx,
		cancel:  cancel,
		sub:     sub,
		topics:  topics,
		pos:     make([]string, len(topics)),
		tags:    cursorTags(topics),
		start:   start,
		timeout: h.WriteTimeout,
		remote:  r.RemoteAddr,
		expiry:  expiry.timer(),
	}
	if c.expiry != nil {
		c.expireAt = expiry.at
	}
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
			c.out = connSink{rawconn.New(conn)}
			if h.Metrics.StreamOpened != nil {
				h.Metrics.StreamOpened()
			}
			go c.serveHijacked(w.Header())
			return
		}
	}
	defer stopForward()
	c.out = &responseSink{w: w, rc: http.NewResponseController(w)}
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

// topicConn is the state of one topic stream. It is served by one goroutine
// of its own; on a hijacked connection, live events are also written by a
// flusher (see notify). Whoever writes first becomes the stream's writer
// (busy, under mu), takes the queued items and prepares the bytes under mu,
// and writes with no lock held; a flusher that finds the stream busy leaves
// the items to the stream's goroutine, which waits for a flusher's write
// (never long: it does not block).
type topicConn struct {
	h       *TopicHandler
	ctx     context.Context // done when the client is gone or the stream must end
	cancel  context.CancelFunc
	sub     broker.Subscription
	timeout time.Duration
	topics  []string // sorted, unique
	tags    []string // cursorTags(topics), for composite cursors; nil for one topic
	start   time.Time
	remote  string
	expiry  *time.Timer // set by ExpireAt in the hook; nil without
	flusher *flusher    // writes live events for publishers (see notify)
	dirty   atomic.Bool // queued on flusher
	parkedConn

	mu       sync.Mutex           // guards the fields below
	out      sink                 // set before the stream starts
	notifier broker.Notifier      // set when publishers write live events (notify)
	pos      []string             // pos[i]: last position of topics[i] known to this stream
	sent     []byte               // the id the client holds now
	posMove  bool                 // a KindPosition moved pos since the last id written
	why      []broker.ResetReason // why[i]: the last reset reason of topics[i]; nil until a reset
	held     []*broker.Event      // items kept until every topic has a position
	busy     bool                 // a writer has taken items and is writing them
	pending  []byte               // what a flusher's write left unwritten: goes out first
	werr     error                // a flusher's write failed: the stream ends
	closed   bool                 // the stream is ending: flushers write no more
}

// maxHeld bounds the items a stream keeps while waiting for the positions
// of all its topics; beyond, it ends as slow (the client resumes).
const maxHeld = broker.DefaultQueueLimit

// positioned reports whether every topic has a position, counting those
// that items (about to be delivered after the held ones) bring.
func (c *topicConn) positioned(items []*broker.Event) bool {
	for i, p := range c.pos {
		if p != "" {
			continue
		}
		found := false
		for _, list := range [][]*broker.Event{c.held, items} {
			for _, ev := range list {
				if ev.Kind == broker.KindPosition && ev.Topic == c.topics[i] {
					found = true
					break
				}
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// batch is the scratch space of one delivery: the items taken from the
// subscription, the pieces to write, and the bytes of composite ids and
// small frames. Batches come from a pool shared by all streams, so an idle
// stream holds no scratch memory at all.
type batch struct {
	items []*broker.Event
	bufs  [][]byte
	idbuf []byte
	iov   rawconn.Iovecs
}

var batchPool = sync.Pool{New: func() any { return new(batch) }}

func getBatch() *batch { return batchPool.Get().(*batch) }

func putBatch(b *batch) {
	clear(b.items) // don't pin events
	clear(b.bufs)
	if cap(b.items) > 1<<14 || cap(b.bufs) > 1<<15 || cap(b.idbuf) > 1<<20 {
		return // an outsized burst: let it go
	}
	b.items, b.bufs, b.idbuf = b.items[:0], b.bufs[:0], b.idbuf[:0]
	batchPool.Put(b)
}

// sink is where a stream's bytes go: a hijacked connection or a
// ResponseWriter.
type sink interface {
	// flush writes bufs (which it may clobber) and pushes them to the
	// client within timeout.
	flush(bufs [][]byte, timeout time.Duration) error
}

type responseSink struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func (s *responseSink) flush(bufs [][]byte, timeout time.Duration) error {
	// A fresh deadline per batch also overrides a server-wide WriteTimeout
	// that would otherwise cut long streams. ErrNotSupported is not fatal.
	_ = s.rc.SetWriteDeadline(time.Now().Add(timeout))
	for _, b := range bufs {
		if _, err := s.w.Write(b); err != nil {
			return err
		}
	}
	return s.rc.Flush()
}

// connSink is a hijacked connection.
type connSink struct{ *rawconn.Conn }

func (s connSink) flush(bufs [][]byte, timeout time.Duration) error {
	return s.WriteBatch(bufs, timeout)
}

// serveHijacked runs a stream on a hijacked HTTP/1.x connection: it writes
// the response head itself (no chunked encoding: the body ends when the
// connection closes) and then the stream, and releases everything at the
// end.
//
// A stream that can be parked (see park.go) is, after its head: this
// goroutine then ends.
func (c *topicConn) serveHijacked(hdr http.Header) {
	conn := c.out.(connSink)
	stop := netwatch.Default.Watch(conn.NetConn(), c.cancel)
	reason := CloseClient
	if c.out.flush([][]byte{rawconn.Head(hdr)}, c.timeout) == nil {
		c.enableNotify()
		if c.park(stop) {
			return
		}
		reason = c.run(nil) // the server does not see hijacked streams
	}
	c.finish(reason)
	stop()
	_ = conn.Close()
}

// enableNotify lets publishers write live events to the connection
// themselves (see notify), when the connection and the subscription allow
// it.
func (c *topicConn) enableNotify() {
	n, ok := c.sub.(broker.Notifier)
	if !ok || c.h.NoPublisherWrites || !c.out.(connSink).CanTryWrite() {
		return
	}
	c.mu.Lock()
	c.notifier = n
	c.flusher = flusherShard()
	c.mu.Unlock()
	n.SetNotify(c.notify)
}

// notify runs on a publisher's goroutine right after it queued a live item
// for this stream (broker.Notifier): it hands the stream to its flusher,
// unless it is already waiting there (the item then goes out with the
// others).
func (c *topicConn) notify() {
	if !c.dirty.Swap(true) {
		c.flusher.add(c)
	}
}

// flush runs on a flusher. If the stream is idle — its goroutine not
// writing, nothing left over — it takes what is queued and writes it with
// one non-blocking writev: a fan-out to thousands of idle streams costs one
// system call each and wakes none of their goroutines. Anything it cannot
// finish (a full socket buffer, an error, the end of the queue) it hands to
// the stream's goroutine, which waits for the socket with the write
// timeout.
func (c *topicConn) flush() {
	c.dirty.Store(false) // an item queued from now on comes back here
	c.mu.Lock()
	if c.busy || c.closed || c.werr != nil || c.pending != nil {
		c.mu.Unlock()
		c.notifier.Signal() // the goroutine takes this item
		return
	}
	c.busy = true
	b := getBatch()
	err, slow := c.intake(b)
	if len(b.items) > 0 && !slow {
		c.prepare(b)
	}
	if c.hbDue.Swap(false) && len(b.bufs) == 0 && err == nil && !slow {
		b.bufs = append(b.bufs, heartbeatFrame) // a parked stream's heartbeat
	}
	c.mu.Unlock()
	var rest []byte
	var werr error
	if len(b.bufs) > 0 {
		rest, werr = c.tryWrite(b)
	}
	putBatch(b)
	c.mu.Lock()
	c.busy = false
	c.pending, c.werr = rest, werr
	c.mu.Unlock()
	if err != nil || slow || rest != nil || werr != nil {
		c.notifier.Signal()
	}
}

// finish releases the stream's subscription and slot and reports it.
func (c *topicConn) finish(reason CloseReason) {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	if c.expiry != nil {
		c.expiry.Stop()
	}
	c.sub.Close()
	c.h.lc.release()
	if c.h.Metrics.StreamClosed != nil {
		c.h.Metrics.StreamClosed(reason)
	}
}

// run serves the stream from its own goroutine until it ends, and returns
// why. shutdown is closed when the http.Server serving it shuts down (nil:
// never).
func (c *topicConn) run(shutdown <-chan struct{}) CloseReason {
	lc := &c.h.lc
	slot := lc.joinHeartbeat()
	defer lc.leaveHeartbeat()
	for {
		select {
		case <-c.sub.Ready():
			if reason := c.pull(); reason != "" {
				return reason
			}
		case <-lc.heartbeat(slot):
			if err := c.write(heartbeatFrame); err != nil {
				return writeReason(err)
			}
		case <-lc.drainCh:
			return c.drained()
		case <-shutdown:
			return c.drained()
		case <-c.expired():
			return CloseExpired
		case <-c.ctx.Done():
			return CloseClient
		}
	}
}

var heartbeatFrame = []byte(":\n\n")

// intake takes the queued items into b, holding them back (in c.held) while
// a multi-topic stream does not know every topic's position: an id with an
// unknown place would make a resume reset that topic. err is the end of the
// subscription (after the items); slow reports too many held items. Call
// with mu held.
func (c *topicConn) intake(b *batch) (err error, slow bool) {
	b.items, err = c.sub.Take(b.items)
	if !c.positioned(b.items) {
		c.held = append(c.held, b.items...)
		clear(b.items)
		b.items = b.items[:0]
		return err, len(c.held) > maxHeld
	}
	if len(c.held) > 0 {
		b.items = append(c.held, b.items...)
		c.held = nil
	}
	return err, false
}

// own makes the stream's goroutine its writer, waiting for a flusher's
// write in progress (short: it does not block). It returns with mu held,
// and with what a flusher left unwritten, or the error its write met.
func (c *topicConn) own() (pending []byte, werr error) {
	c.mu.Lock()
	for c.busy {
		c.mu.Unlock()
		runtime.Gosched()
		c.mu.Lock()
	}
	c.busy = true
	pending, c.pending = c.pending, nil
	return pending, c.werr
}

// release ends a write begun with own.
func (c *topicConn) release() {
	c.mu.Lock()
	c.busy = false
	c.mu.Unlock()
}

// pull is the goroutine's delivery: what a flusher left over, then
// everything queued, written with the write timeout. It returns the reason
// the stream ends, or "".
func (c *topicConn) pull() CloseReason {
	pending, werr := c.own()
	if werr != nil {
		c.mu.Unlock()
		c.release()
		return writeReason(werr)
	}
	b := getBatch()
	err, slow := c.intake(b)
	if len(b.items) > 0 && !slow {
		c.prepare(b)
	}
	c.mu.Unlock()
	if pending != nil {
		werr = c.out.flush([][]byte{pending}, c.timeout)
	}
	if werr == nil && len(b.bufs) > 0 {
		werr = c.out.flush(b.bufs, c.timeout)
	}
	putBatch(b)
	c.release()
	switch {
	case slow:
		return CloseSlow
	case werr != nil:
		return writeReason(werr)
	case err != nil:
		return c.subscriptionEnded(err)
	}
	return ""
}

// write writes one frame (a heartbeat, a retry hint) from the stream's
// goroutine, after what a flusher left over.
func (c *topicConn) write(frame []byte) error {
	pending, werr := c.own()
	c.mu.Unlock()
	defer c.release()
	if werr != nil {
		return werr
	}
	bufs := [][]byte{frame}
	if pending != nil {
		bufs = [][]byte{pending, frame}
	}
	return c.out.flush(bufs, c.timeout)
}

// tryWrite writes a prepared batch without waiting (see flush). It returns
// a copy of what the socket did not take now, or the error of the write.
func (c *topicConn) tryWrite(b *batch) (rest []byte, err error) {
	rest, b.iov, err = c.out.(connSink).TryWrite(b.bufs, b.iov)
	return rest, err
}

func (c *topicConn) subscriptionEnded(err error) CloseReason {
	switch {
	case c.ctx.Err() != nil:
		return CloseClient
	case errors.Is(err, broker.ErrSlowConsumer):
		c.h.logger().Info("sse: disconnecting a slow client", "topics", c.topics, "remote", c.remote)
		return CloseSlow
	default:
		c.h.logger().Warn("sse: subscription ended", "topics", c.topics, "err", err)
		return CloseBroker
	}
}

func writeReason(err error) CloseReason {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return CloseSlow
	}
	return CloseClient
}

func (c *topicConn) index(topic string) int {
	for i, t := range c.topics {
		if t == topic {
			return i
		}
	}
	return -1
}

// prepare turns a batch of items into the pieces to write (b.bufs), all
// written with one writev. One-topic streams write each event's shared
// frame as it is; multi-topic streams write their composite id line and the
// frame's body. Call with mu held, as the stream's writer.
func (c *topicConn) prepare(b *batch) {
	m := &c.h.Metrics
	var now time.Time
	if m.Delivered != nil {
		now = time.Now()
	}
	replayed := 0
	single := len(c.topics) == 1
	if !single {
		// A topic's first position is its first item (after a reset):
		// take it before writing any id, so that an event of another topic
		// earlier in the batch does not go out without this topic's place.
		for i := range c.pos {
			if c.pos[i] != "" {
				continue
			}
			for _, ev := range b.items {
				if ev.Kind == broker.KindPosition && ev.Topic == c.topics[i] {
					c.pos[i] = ev.ID
					c.posMove = true
					break
				}
			}
		}
	}
	bufs, idbuf := b.bufs[:0], b.idbuf[:0]
	for _, ev := range b.items {
		i := c.index(ev.Topic)
		if i < 0 {
			continue // not ours; a broker bug, but never a wire problem
		}
		switch ev.Kind {
		case broker.KindEvent:
			c.pos[i] = ev.ID
			frame := ev.Memo(encodeBrokerEvent)
			if single {
				bufs = append(bufs, frame)
				c.sent = append(c.sent[:0], ev.ID...)
			} else {
				// Earlier pieces of idbuf stay valid if it grows: they keep
				// the old array.
				at := len(idbuf)
				idbuf = append(idbuf, "id: "...)
				idbuf = appendCursor(idbuf, c.tags, c.pos)
				idbuf = append(idbuf, '\n')
				bufs = append(bufs, idbuf[at:len(idbuf):len(idbuf)], frameBody(frame))
				c.sent = append(c.sent[:0], idbuf[at+4:len(idbuf)-1]...)
			}
			c.posMove = false
			switch {
			case ev.Time.IsZero() || !ev.Time.Before(c.start):
				if m.Delivered != nil {
					m.Delivered(ev, now)
				}
			case c.why != nil && c.why[i] != "":
				if m.Replayed != nil {
					m.Replayed(1, c.why[i]) // rare: after a reset only
				}
			default:
				replayed++
			}
		case broker.KindPosition:
			if c.pos[i] != ev.ID {
				c.pos[i] = ev.ID
				c.posMove = true
			}
		case broker.KindReset:
			at := len(idbuf)
			idbuf = appendReset(idbuf, ev.Topic, ev.Reason)
			bufs = append(bufs, idbuf[at:len(idbuf):len(idbuf)])
			if c.why == nil {
				c.why = make([]broker.ResetReason, len(c.topics))
			}
			c.why[i] = ev.Reason
			if m.Reset != nil {
				m.Reset(ev.Topic, ev.Reason)
			}
		}
	}
	if c.posMove {
		c.posMove = false
		at := len(idbuf)
		idbuf = appendCursor(idbuf, c.tags, c.pos)
		if cur := idbuf[at:]; len(cur) > 0 && !bytes.Equal(cur, c.sent) {
			c.sent = append(c.sent[:0], cur...)
			idbuf = append(append(append(idbuf[:at], "id: "...), c.sent...), '\n', '\n')
			bufs = append(bufs, idbuf[at:len(idbuf):len(idbuf)])
		}
	}
	if replayed > 0 && m.Replayed != nil {
		m.Replayed(replayed, "")
	}
	b.bufs, b.idbuf = bufs, idbuf
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

func appendReset(dst []byte, topic string, reason broker.ResetReason) []byte {
	data, _ := json.Marshal(struct {
		Topic  string             `json:"topic"`
		Reason broker.ResetReason `json:"reason"`
	}{topic, reason})
	dst = append(dst, "event: "+ResetEventType+"\ndata: "...)
	dst = append(dst, data...)
	return append(dst, '\n', '\n')
}
