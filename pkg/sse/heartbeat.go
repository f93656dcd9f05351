package sse

import (
	"sync"
	"sync/atomic"
	"time"
)

// heartbeatSlots spreads heartbeats over the interval: each connection is
// assigned one slot, and one slot fires every interval/heartbeatSlots, so
// 100k connections do not all write in the same millisecond.
const heartbeatSlots = 8

// heartbeats wakes idle connections every interval without a timer per
// connection: one shared timer closes a broadcast channel per slot. It runs
// no goroutine while no connection uses it.
type heartbeats struct {
	interval time.Duration
	slots    [heartbeatSlots]atomic.Pointer[chan struct{}]
	assign   atomic.Uint32

	// onTick, if set, is called with each slot that fires (outside mu):
	// the parked streams of the slot (park.go).
	onTick func(slot int)

	mu    sync.Mutex // guards users, timer and next
	users int
	timer *time.Timer
	next  int
}

func newHeartbeats(interval time.Duration) *heartbeats {
	h := &heartbeats{interval: interval}
	for i := range h.slots {
		ch := make(chan struct{})
		h.slots[i].Store(&ch)
	}
	return h
}

// join registers a connection and returns its slot.
func (h *heartbeats) join() int {
	h.mu.Lock()
	h.users++
	if h.users == 1 {
		if h.timer == nil {
			h.timer = time.AfterFunc(h.step(), h.tick)
		} else {
			h.timer.Reset(h.step())
		}
	}
	h.mu.Unlock()
	return int(h.assign.Add(1) % heartbeatSlots)
}

// leave unregisters a connection; the last one stops the timer.
func (h *heartbeats) leave() {
	h.mu.Lock()
	h.users--
	if h.users == 0 && h.timer != nil {
		h.timer.Stop()
	}
	h.mu.Unlock()
}

// wait returns a channel that is closed at the slot's next heartbeat.
func (h *heartbeats) wait(slot int) <-chan struct{} { return *h.slots[slot].Load() }

func (h *heartbeats) step() time.Duration {
	d := h.interval / heartbeatSlots
	if d <= 0 {
		d = 1
	}
	return d
}

func (h *heartbeats) tick() {
	h.mu.Lock()
	ch := make(chan struct{})
	slot := h.next
	old := h.slots[slot].Swap(&ch)
	close(*old)
	h.next = (h.next + 1) % heartbeatSlots
	if h.users > 0 {
		h.timer.Reset(h.step())
	}
	h.mu.Unlock()
	if h.onTick != nil {
		h.onTick(slot)
	}
}
