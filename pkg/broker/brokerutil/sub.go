package brokerutil

import (
	"context"
	"sync"

	"github.com/herald-sse/herald/pkg/broker"
)

// Sub is a ready-made broker.Subscription for Broker implementations: a Queue that
// ends exactly once — on Close, when its context is done, or when the
// broker ends it — and then calls the broker's release function once, to
// unregister it from the broker's topics. Embed it in the broker's own
// subscription type and Init it (one allocation for the whole
// subscription), or use NewSub.
//
// A Sub must not be copied after Init.
type Sub struct {
	Queue
	release func()

	mu    sync.Mutex // guards ended and stop
	ended bool
	stop  func() bool // stops the context.AfterFunc of EndWhenDone
}

// NewSub returns a subscription on a new Queue holding at most limit
// pending live items (see NewQueue). release, if not nil, is called once,
// after the queue has ended.
func NewSub(limit int, release func()) *Sub {
	s := new(Sub)
	s.Init(limit, release)
	return s
}

// Init readies a Sub embedded in another type, as NewSub does: call it
// once, before the subscription is used.
func (s *Sub) Init(limit int, release func()) {
	s.Queue.init(limit)
	s.release = release
}

// EndWhenDone ends the subscription with ctx.Err() once ctx is done,
// without a goroutine (context.AfterFunc). Call it once the subscription is
// registered; if it has already ended, it does nothing.
//
// It uses AfterFunc (below).
func (s *Sub) EndWhenDone(ctx context.Context) {
	stop := AfterFunc(ctx, func() { s.End(ctx.Err()) })
	s.mu.Lock()
	s.stop = stop
	ended := s.ended
	s.mu.Unlock()
	if ended {
		stop()
	}
}

// AfterFunc is context.AfterFunc, except that a context with an AfterFunc
// method of that shape (the method the context package itself looks for,
// and pkg/sse's stream contexts have) is asked directly: that spares the
// child context and the Done channel context.AfterFunc would make, which
// would live as long as the subscription.
func AfterFunc(ctx context.Context, f func()) (stop func() bool) {
	if a, ok := ctx.(afterFuncer); ok {
		return a.AfterFunc(f)
	}
	return context.AfterFunc(ctx, f)
}

type afterFuncer interface {
	AfterFunc(func()) (stop func() bool)
}

// End ends the subscription with err (the queue keeps its first error, so
// a slow consumer stays broker.ErrSlowConsumer) and releases it. It is idempotent
// and safe for concurrent use.
func (s *Sub) End(err error) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended = true
	stop := s.stop
	s.mu.Unlock()
	s.Queue.Fail(err)
	if stop != nil {
		stop()
	}
	if s.release != nil {
		s.release()
	}
}

// Close implements broker.Subscription: it ends the subscription with broker.ErrClosed.
func (s *Sub) Close() error {
	s.End(broker.ErrClosed)
	return nil
}
