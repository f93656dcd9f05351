package sse

import (
	"errors"
	"net/http"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/broker/brokerutil"
	"github.com/herald-sse/herald/pkg/sse/internal/rawconn"
)

// topicStream is the state of one topic stream. It is served by one goroutine
// of its own; on a hijacked connection, live events are also written by a
// flusher (see notify). Whoever writes first becomes the stream's writer
// (busy, under mu), takes the queued items and prepares the bytes under mu,
// and writes with no lock held; a flusher that finds the stream busy leaves
// the items to the stream's goroutine, which waits for a flusher's write
// (never long: it does not block).
type topicStream struct {
	h       *TopicHandler
	ctx     streamCtx // done when the client is gone or the stream must end
	sub     broker.Subscription
	timeout time.Duration
	topics  []string      // sorted, unique
	tags    []string      // cursorTags(topics), for composite cursors; nil for one topic
	start   int64         // when the stream started, Unix ns: events before are replays
	expiry  *streamExpiry // set by ExpireAt in the hook; nil without
	flusher *flusher      // writes live events queued for an idle stream (see notify)
	parkedConn

	mu       sync.Mutex           // guards the fields below
	out      sink                 // set before the stream starts
	notifier brokerutil.Notifier  // set when the flusher writes live events (notify)
	pos      []string             // pos[i]: last position of topics[i] known to this stream
	sent     []byte               // the id the client holds now
	why      []broker.ResetReason // why[i]: the last reset reason of topics[i]; nil until a reset
	held     []*broker.Event      // items kept until every topic has a position
	pending  []byte               // what a flusher's write left unwritten: goes out first
	werr     error                // a flusher's write failed: the stream ends
	posMove  bool                 // a KindPosition moved pos since the last id written
	busy     bool                 // a writer has taken items and is writing them
	closed   bool                 // the stream is ending: flushers write no more

	dirty atomic.Bool // queued on flusher (not guarded by mu; last to pack with the bools)
}

// maxHeld bounds the items a stream keeps while waiting for the positions
// of all its topics; beyond, it ends as slow (the client resumes).
const maxHeld = broker.DefaultQueueLimit

// positioned reports whether every topic has a position, counting those
// that items (about to be delivered after the held ones) bring.
func (c *topicStream) positioned(items []*broker.Event) bool {
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

// serveHijacked runs a stream on a hijacked HTTP/1.x connection: it writes
// the response head itself (no chunked encoding: the body ends when the
// connection closes) and then the stream, and releases everything at the
// end.
//
// A stream that can be parked (see park.go) is, after its head: this
// goroutine then ends.
func (c *topicStream) serveHijacked(hdr http.Header) {
	conn := c.out.(connSink)
	reason := CloseClient
	if conn.writeHead(rawconn.Head(hdr), c.timeout) == nil {
		c.enableNotify()
		if c.park() {
			return
		}
		reason = c.run(nil) // the server does not see hijacked streams
	}
	c.finish(reason)
	_ = conn.Close()
}

// enableNotify has live events written by the stream's flusher (see
// notify), when the connection and the subscription allow it.
func (c *topicStream) enableNotify() {
	n, ok := c.sub.(brokerutil.Notifier)
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
// for this stream (brokerutil.Notifier): it hands the stream to its flusher,
// unless it is already waiting there (the item then goes out with the
// others).
func (c *topicStream) notify() {
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
func (c *topicStream) flush() {
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

// cancel makes the stream's context done (the client is gone, or the
// stream ends) and wakes a parked stream to notice. It never blocks.
func (c *topicStream) cancel() {
	if c.ctx.cancel() && c.parked.Load() {
		c.kick()
	}
}

// finish releases the stream's subscription and slot and reports it.
func (c *topicStream) finish(reason CloseReason) {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	if c.expiry != nil {
		c.expiry.timer.Stop()
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
func (c *topicStream) run(shutdown <-chan struct{}) CloseReason {
	lc := &c.h.lc
	gone := c.ctx.Done()
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
		case <-gone:
			return CloseClient
		}
	}
}

// intake takes the queued items into b, holding them back (in c.held) while
// a multi-topic stream does not know every topic's position: an id with an
// unknown place would make a resume reset that topic. err is the end of the
// subscription (after the items); slow reports too many held items. Call
// with mu held.
func (c *topicStream) intake(b *batch) (err error, slow bool) {
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
func (c *topicStream) own() (pending []byte, werr error) {
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
func (c *topicStream) release() {
	c.mu.Lock()
	c.busy = false
	c.mu.Unlock()
}

// pull is the goroutine's delivery: what a flusher left over, then
// everything queued, written with the write timeout. It returns the reason
// the stream ends, or "".
func (c *topicStream) pull() CloseReason {
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
		werr = c.writeBatch(b)
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

// writeBatch writes a prepared batch from the stream's goroutine. A parked
// stream first tries a non-blocking write, as a flusher does: what the
// socket takes at once needs no write deadline (a runtime timer) and no
// iovec array of net's, both of which would stay with the idle connection.
func (c *topicStream) writeBatch(b *batch) error {
	if !c.parked.Load() {
		return c.out.flush(b.bufs, c.timeout)
	}
	rest, err := c.tryWrite(b)
	if err != nil || rest == nil {
		return err
	}
	return c.out.flush([][]byte{rest}, c.timeout)
}

// write writes one frame (a heartbeat, a retry hint) from the stream's
// goroutine, after what a flusher left over.
func (c *topicStream) write(frame []byte) error {
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
func (c *topicStream) tryWrite(b *batch) (rest []byte, err error) {
	rest, b.iov, err = c.out.(connSink).TryWrite(b.bufs, b.iov)
	return rest, err
}

func (c *topicStream) subscriptionEnded(err error) CloseReason {
	switch {
	case c.ctx.Err() != nil:
		return CloseClient
	case errors.Is(err, broker.ErrSlowConsumer):
		c.h.logger().Info("sse: disconnecting a slow client", "topics", c.topics, "remote", c.out.remoteAddr())
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
