package sse

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// Live events for idle hijacked streams are written by a small pool of
// flushers, neither by the publishing goroutine nor by the stream's: a
// publish only queues the event and marks its idle streams dirty (cheap),
// and the flushers write them, one non-blocking writev per stream. A
// publisher is never held up by a fan-out, fan-outs use every P, and
// events published while a flusher is still working through a list
// coalesce into one write per stream.
//
// A flusher runs while it has work and exits when its list is empty, so an
// idle process keeps no goroutine for it.

type flusher struct {
	mu      sync.Mutex
	list    []*topicStream // dirty streams, in the order they became dirty
	spare   []*topicStream
	running bool
}

var (
	flushersOnce sync.Once
	flushers     []flusher
	flusherNext  atomic.Uint32
)

// flusherShard picks the flusher of a new stream.
func flusherShard() *flusher {
	flushersOnce.Do(func() { flushers = make([]flusher, max(1, runtime.GOMAXPROCS(0))) })
	return &flushers[int(flusherNext.Add(1))%len(flushers)]
}

// add queues c for a write and starts the flusher if it is idle.
func (f *flusher) add(c *topicStream) {
	f.mu.Lock()
	f.list = append(f.list, c)
	start := !f.running
	f.running = true
	f.mu.Unlock()
	if start {
		go f.run()
	}
}

func (f *flusher) run() {
	for {
		f.mu.Lock()
		list := f.list
		if len(list) == 0 {
			f.running = false
			f.mu.Unlock()
			return
		}
		f.list = f.spare
		f.spare = nil
		f.mu.Unlock()
		for i, c := range list {
			list[i] = nil
			c.flush()
		}
		f.mu.Lock()
		if f.spare == nil && cap(list) <= 1<<16 {
			f.spare = list[:0]
		}
		f.mu.Unlock()
	}
}
