package sse

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// streamCtx is a topic stream's context: done once the client is gone
// (netwatch, or the request's context while ServeHTTP runs) or the stream
// ends. It is a field of the stream, not a context.WithCancel child, so an
// idle stream pays for no context of its own: its Done channel is made
// only when something waits on it (a stream on its own goroutine), and
// callbacks registered with its AfterFunc method — which context.AfterFunc
// and brokerutil.Sub.EndWhenDone use — are kept here rather than in a
// child context and a registration on it.
type streamCtx struct {
	gone atomic.Bool // cancel was called

	mu    sync.Mutex // guards the fields below
	done  chan struct{}
	after *afterFn // AfterFunc callbacks not yet stopped, newest first
}

type afterFn struct {
	f    func()
	next *afterFn
}

var _ context.Context = (*streamCtx)(nil)

func (x *streamCtx) Deadline() (time.Time, bool) { return time.Time{}, false }
func (x *streamCtx) Value(any) any               { return nil }

func (x *streamCtx) Err() error {
	if x.gone.Load() {
		return context.Canceled
	}
	return nil
}

func (x *streamCtx) Done() <-chan struct{} {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.done == nil {
		x.done = make(chan struct{})
		if x.gone.Load() {
			close(x.done)
		}
	}
	return x.done
}

// AfterFunc arranges for f to run on its own goroutine once x is done, as
// context.AfterFunc does (which calls this method). stop unregisters f; it
// reports whether it did so before f was started.
func (x *streamCtx) AfterFunc(f func()) (stop func() bool) {
	x.mu.Lock()
	if x.gone.Load() {
		x.mu.Unlock()
		go f()
		return func() bool { return false }
	}
	e := &afterFn{f: f, next: x.after}
	x.after = e
	x.mu.Unlock()
	return func() bool {
		x.mu.Lock()
		defer x.mu.Unlock()
		for p := &x.after; *p != nil; p = &(*p).next {
			if *p == e {
				*p = e.next
				return true
			}
		}
		return false
	}
}

// cancel makes x done. It never blocks: the callbacks run on goroutines of
// their own. It reports whether this call made x done.
func (x *streamCtx) cancel() bool {
	x.mu.Lock()
	if x.gone.Load() {
		x.mu.Unlock()
		return false
	}
	x.gone.Store(true)
	if x.done != nil {
		close(x.done)
	}
	fns := x.after
	x.after = nil
	x.mu.Unlock()
	for e := fns; e != nil; e = e.next {
		go e.f()
	}
	return true
}
