package brokerutil

import (
	"sync"
	"sync/atomic"

	"github.com/herald-sse/herald/pkg/broker"
)

// Queue is the bounded, ordered hand-off between a broker's fan-out and one
// subscriber. It implements Ready and Take of broker.Subscription; brokers embed it.
//
// Overflow policy: disconnect. Push never blocks; when more than Limit items
// are pending the queue ends with broker.ErrSlowConsumer, the subscriber sees the
// error after taking what was queued, and resumes later from its cursor. The
// initial replay (Preload) does not count against the limit.
//
// Push and Fail are safe for concurrent use with each other and with Take.
type Queue struct {
	// ready is made by the first Ready (a consumer that is called back,
	// see Waker, never asks for it), capacity 1: a pending wake-up.
	ready    atomic.Pointer[chan struct{}]
	readyDue atomic.Bool // a wake-up before ready was made

	mu      sync.Mutex // guards the fields below
	items   []*broker.Event
	bound   int    // current limit on len(items): limit, plus the preload until first drained
	limit   int    // configured limit
	err     error  // terminal error; set once
	dropped bool   // items are no longer accepted
	notify  func() // see SetNotify; nil: Push signals Ready

	wakeFn atomic.Pointer[func()] // see SetWake; nil: signal Ready
}

// Notifier is implemented by subscriptions built on Queue. A consumer that
// can take and write items without blocking (pkg/sse on a hijacked
// connection) uses it to hear of each live item on the pushing goroutine
// instead of waking a goroutine of its own per item: pkg/sse's callback
// only hands the stream to one of its flushers, which takes and writes
// what is queued.
type Notifier interface {
	// SetNotify makes Push call fn, instead of signalling Ready, once the
	// item is queued. fn runs on the pushing goroutine, possibly while the
	// broker holds a topic lock: it must not block and must not call back
	// into the broker (Close, Subscribe, Publish); it may call Take and
	// Signal. Preload, Refill, Fail and overflow still signal Ready.
	SetNotify(fn func())
	// Signal signals Ready: the consumer's own goroutine takes over.
	Signal()
}

// Waker is implemented by subscriptions built on Queue. A consumer that
// keeps no goroutine waiting on Ready (pkg/sse's parked streams) uses it
// to be called instead: after SetWake(fn), everything that would signal
// Ready (Preload, Refill, Fail, overflow, Signal, and Push without
// SetNotify) calls fn instead. fn runs on the signalling goroutine,
// possibly under a broker's or the queue's lock: it must not block and
// must not call into the subscription or the broker; it typically starts
// the consumer's goroutine, which then calls Take.
type Waker interface {
	SetWake(fn func())
}

var (
	_ Notifier = (*Queue)(nil)
	_ Waker    = (*Queue)(nil)
)

// NewQueue returns a queue that holds at most limit pending items
// (broker.DefaultQueueLimit if limit <= 0).
func NewQueue(limit int) *Queue {
	q := new(Queue)
	q.init(limit)
	return q
}

func (q *Queue) init(limit int) {
	if limit <= 0 {
		limit = broker.DefaultQueueLimit
	}
	q.limit, q.bound = limit, limit
}

// SetNotify implements Notifier.
func (q *Queue) SetNotify(fn func()) {
	q.mu.Lock()
	q.notify = fn
	q.mu.Unlock()
}

// Signal implements Notifier.
func (q *Queue) Signal() { q.wake() }

// SetWake implements Waker.
func (q *Queue) SetWake(fn func()) {
	if fn == nil {
		q.wakeFn.Store(nil)
		return
	}
	q.wakeFn.Store(&fn)
}

func (q *Queue) wake() {
	if fn := q.wakeFn.Load(); fn != nil {
		(*fn)()
		return
	}
	if ch := q.ready.Load(); ch != nil {
		signal(*ch)
		return
	}
	q.readyDue.Store(true)
	// Ready may have made the channel meanwhile: whichever of the two
	// takes readyDue signals it.
	if ch := q.ready.Load(); ch != nil && q.readyDue.Swap(false) {
		signal(*ch)
	}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Preload appends items regardless of the limit (a replay is bounded by the
// history size). It returns false if the queue has ended.
func (q *Queue) Preload(items ...*broker.Event) bool {
	q.mu.Lock()
	if q.dropped {
		q.mu.Unlock()
		return false
	}
	q.items = append(q.items, items...)
	q.bound += len(items)
	q.mu.Unlock()
	q.wake()
	return true
}

// Push appends one item. It returns false if the queue has ended, either
// before or because of this push (overflow: broker.ErrSlowConsumer). A broker
// should stop delivering to a queue once Push returned false.
func (q *Queue) Push(e *broker.Event) bool {
	q.mu.Lock()
	if q.dropped {
		q.mu.Unlock()
		return false
	}
	if len(q.items) >= q.bound {
		q.dropped = true
		q.err = broker.ErrSlowConsumer
		q.mu.Unlock()
		q.wake()
		return false
	}
	q.items = append(q.items, e)
	notify := q.notify
	q.mu.Unlock()
	if notify != nil {
		notify()
	} else {
		q.wake()
	}
	return true
}

// Refill appends items a broker recovered after a gap in its live feed
// (read back from history after its connection to the store came back). A
// subscriber that was keeping up, with nothing pending, takes them like a
// replay, whatever their number: a long outage must not cut every healthy
// subscriber at once. One that was already behind counts them against its
// limit, as Push does. It returns false if the queue has ended, before or
// because of this refill.
func (q *Queue) Refill(items ...*broker.Event) bool {
	q.mu.Lock()
	if q.dropped {
		q.mu.Unlock()
		return false
	}
	switch {
	case len(q.items) == 0:
		q.bound = q.limit + len(items)
	case len(q.items)+len(items) > q.bound:
		q.dropped = true
		q.err = broker.ErrSlowConsumer
		q.mu.Unlock()
		q.wake()
		return false
	}
	q.items = append(q.items, items...)
	q.mu.Unlock()
	q.wake()
	return true
}

// Fail ends the queue with err: no more items are accepted, those already
// pending are still delivered, then Take returns err. The first error wins.
// A nil err is taken as broker.ErrClosed (Take must report the end somehow).
func (q *Queue) Fail(err error) {
	if err == nil {
		err = broker.ErrClosed
	}
	q.mu.Lock()
	if !q.dropped {
		q.dropped = true
		q.err = err
	}
	q.mu.Unlock()
	q.wake()
}

// Ended reports whether the queue accepts no more items.
func (q *Queue) Ended() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.dropped
}

// Ready implements broker.Subscription.
func (q *Queue) Ready() <-chan struct{} {
	if ch := q.ready.Load(); ch != nil {
		return *ch
	}
	ch := make(chan struct{}, 1)
	if !q.ready.CompareAndSwap(nil, &ch) {
		return *q.ready.Load()
	}
	if q.readyDue.Swap(false) {
		signal(ch)
	}
	return ch
}

// Take implements broker.Subscription.
func (q *Queue) Take(dst []*broker.Event) ([]*broker.Event, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 {
		if q.dropped {
			return dst, q.err
		}
		return dst, nil
	}
	dst = append(dst, q.items...)
	clear(q.items)
	if cap(q.items) > 4*q.limit && cap(q.items) > 64 {
		q.items = nil // let a preload-sized backing array go
	} else {
		q.items = q.items[:0]
	}
	q.bound = q.limit
	if q.dropped {
		// More to report: make sure the consumer comes back for the error.
		q.wake()
	}
	return dst, nil
}
