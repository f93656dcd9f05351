package sse

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-sse/herald/pkg/broker/brokerutil"
)

// Parked streams. A stream on a raw connection whose subscription can call
// back (brokerutil.Notifier for live items, brokerutil.Waker for everything else)
// holds no goroutine while it is idle: after its response head it is state
// in shared machinery, and a goroutine exists only while work is in flight.
//
//   - Live events: publishers mark the stream dirty and a flusher writes it
//     with one non-blocking writev (notify, flush), as for any stream.
//   - Heartbeats: the shared heartbeat timer fires one slot of streams at a
//     time (an eighth of them every eighth of the interval) and hands each
//     to its flusher, which writes the comment with the events, if any.
//   - Everything else — a replay, a refill, the end of the subscription, a
//     write the socket would not take at once, the peer gone (netwatch
//     cancels the context), the credentials expiring, a drain — kicks the
//     stream: a goroutine starts, does what the stream's own goroutine would
//     do (pull, with the write timeout), and ends when nothing is left.
//
// Nothing walks every stream except a drain, and nothing runs per stream
// while it is idle but one runtime timer for streams with an expiry.

// drive states of a parked stream.
const (
	parkIdle    int32 = iota // no goroutine
	parkRunning              // a goroutine drives the stream
	parkAgain                // ... and was kicked again meanwhile: one more round
)

// parkSlot is one shard of a lifecycle's parked streams: the heartbeat slot
// they share.
type parkSlot struct {
	mu    sync.Mutex
	conns []*topicStream // conns[i].parkIdx == i
}

func (s *parkSlot) add(c *topicStream) {
	s.mu.Lock()
	c.parkIdx = int32(len(s.conns))
	s.conns = append(s.conns, c)
	s.mu.Unlock()
}

func (s *parkSlot) remove(c *topicStream) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := int(c.parkIdx)
	if i < 0 || i >= len(s.conns) || s.conns[i] != c {
		return
	}
	last := len(s.conns) - 1
	s.conns[i] = s.conns[last]
	s.conns[i].parkIdx = int32(i)
	s.conns[last] = nil
	s.conns = s.conns[:last]
	c.parkIdx = -1
	if cap(s.conns) > 64 && len(s.conns) < cap(s.conns)/4 {
		s.conns = append([]*topicStream(nil), s.conns...)
	}
}

// each calls fn for every stream of the slot, outside the slot's lock.
func (s *parkSlot) each(fn func(*topicStream)) {
	s.mu.Lock()
	list := append([]*topicStream(nil), s.conns...)
	s.mu.Unlock()
	for _, c := range list {
		fn(c)
	}
}

// heartbeatParked is the heartbeat timer's call for slot: every parked
// stream of it gets a heartbeat through its flusher.
func (l *lifecycle) heartbeatParked(slot int) {
	l.park[slot].each(func(c *topicStream) {
		c.hbDue.Store(true)
		c.notify()
	})
}

// kickParked wakes every parked stream (a drain).
func (l *lifecycle) kickParked() {
	for i := range l.park {
		l.park[i].each((*topicStream).kick)
	}
}

// park turns the stream into a parked one and returns true, or returns
// false when it cannot be parked (the caller then runs it on its goroutine).
// Call after enableNotify, on the goroutine that wrote the response head.
func (c *topicStream) park() bool {
	w, ok := c.sub.(brokerutil.Waker)
	if !ok || c.notifier == nil || c.h.NoPark {
		return false
	}
	lc := &c.h.lc
	// Kicks from here on (the callbacks below may fire at once) only ask
	// for another round: the first round starts at the end, after every
	// field is set.
	c.drive.Store(parkRunning)
	c.slot = int32(lc.joinHeartbeat())
	if c.expiry != nil {
		// A callback instead of a channel nobody waits on.
		c.expiry.timer.Stop()
		c.expiry.timer = time.AfterFunc(time.Until(c.expiry.at), c.kick)
	}
	c.parked.Store(true) // a cancel from now on kicks; one before, the first round sees
	lc.park[c.slot].add(c)
	w.SetWake(c.kick)
	go c.driveParked() // what was queued before; and a drain that began meanwhile
	return true
}

// kick makes sure a goroutine looks at the stream soon: it starts one, or
// tells the running one to go round once more. It never blocks: it runs
// under brokers' locks (brokerutil.Waker) and on publishers' goroutines.
func (c *topicStream) kick() {
	for {
		switch s := c.drive.Load(); s {
		case parkIdle:
			if c.drive.CompareAndSwap(parkIdle, parkRunning) {
				go c.driveParked()
				return
			}
		case parkRunning:
			if c.drive.CompareAndSwap(parkRunning, parkAgain) {
				return
			}
		default:
			return
		}
	}
}

// driveParked does the stream's work until there is none, then parks it
// again — or ends it.
func (c *topicStream) driveParked() {
	for {
		if reason := c.step(); reason != "" {
			c.endParked(reason) // the state stays running: no kick starts another
			return
		}
		if c.drive.CompareAndSwap(parkRunning, parkIdle) {
			return
		}
		c.drive.Store(parkRunning) // kicked meanwhile: once more
	}
}

// step is one round of what run's loop does, without waiting for anything
// but writes. It returns why the stream ends, or "".
func (c *topicStream) step() CloseReason {
	lc := &c.h.lc
	select {
	case <-lc.drainCh:
		return c.drained()
	default:
	}
	if c.ctx.Err() != nil {
		return CloseClient
	}
	if c.expiry != nil && !time.Now().Before(c.expiry.at) {
		return CloseExpired
	}
	if reason := c.pull(); reason != "" {
		return reason
	}
	if c.hbDue.Swap(false) {
		if err := c.write(heartbeatFrame); err != nil {
			return writeReason(err)
		}
	}
	return ""
}

// drained ends a stream for a drain: no flusher writes from now on; the
// client is told when to reconnect.
func (c *topicStream) drained() CloseReason {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	if hint := appendRetryHint(nil, c.h.lc.drainRetry()); len(hint) > 0 {
		_ = c.write(hint)
	}
	return CloseDrain
}

// endParked releases what park took and ends the stream.
func (c *topicStream) endParked(reason CloseReason) {
	lc := &c.h.lc
	lc.park[c.slot].remove(c)
	lc.leaveHeartbeat()
	c.finish(reason)
	_ = c.out.(connSink).Close()
}

// parkedConn is what parking adds to a topicStream.
type parkedConn struct {
	drive   atomic.Int32 // parkIdle, parkRunning, parkAgain
	hbDue   atomic.Bool  // a heartbeat is to be written
	parked  atomic.Bool  // cancel kicks the stream
	slot    int32        // heartbeat and park slot
	parkIdx int32        // index in its park slot; guarded by the slot's mu
}
