package redisbroker

import (
	"strings"
	"time"

	"github.com/herald-sse/herald/pkg/broker"
)

// onMessage delivers a live event: to the topic's live members unless it
// is stale (then it is buffered for the refill). A message from a shard
// that no longer carries the topic is dropped: the refill after its move
// covers it, in order.
func (s *shard) onMessage(channel, payload string) {
	b := s.b
	b.mu.Lock()
	t := b.topics[channel]
	if t != nil && t.sh != s {
		t = nil
	}
	b.mu.Unlock()
	if t == nil {
		return
	}
	b.deliver(t, channel, payload)
}

// deliver decodes a live event of t and pushes it to t's live members
// (see shard.onMessage).
func (b *Broker) deliver(t *topic, channel, payload string) {
	it, ok := decodeMessage(t.name, payload)
	if !ok {
		b.log.Warn("redisbroker: ignoring malformed message", "channel", channel)
		return
	}
	b.lastLive.Store(time.Now().UnixNano())
	var slow []*subscription
	schedule := false
	t.mu.Lock()
	if t.removed {
		t.mu.Unlock()
		return
	}
	if !t.stale && len(t.live) > 0 && it.epoch != t.epoch {
		// The stream was lost and recreated without this connection
		// noticing: refill (and reset) the live subscribers.
		t.stale = true
		t.inval++
		schedule = true
	}
	if !t.stale && len(t.loading) == 0 && (len(t.buf) > 0 || t.covered) {
		// Not buffering (nothing to load): what was buffered and the
		// cover are not contiguous with what a later round buffers.
		t.restartBuf()
	}
	if t.stale || len(t.loading) > 0 {
		if n := len(t.buf); n > 0 && t.buf[n-1].epoch != it.epoch {
			// A run of buffered events holds one epoch.
			t.restartBuf()
		}
		if len(t.buf) >= bufLimit {
			t.restartBuf()
			t.bufOverflow = true
		} else {
			t.buf = append(t.buf, it)
		}
	}
	if !t.stale && len(t.live) > 0 {
		t.noteDelivered(b.recentCap, it.epoch, it.id)
	}
	if !t.stale {
		for _, m := range t.live {
			if m.pos.less(it.id) {
				m.pos, m.atEvent = it.id, true
				if !m.s.Push(it.ev) {
					slow = append(slow, m.s)
				}
			}
		}
	}
	t.mu.Unlock()
	if schedule {
		b.schedule(t)
	}
	for _, s := range slow {
		s.End(broker.ErrSlowConsumer)
	}
}

// decodeMessage parses "<id>\n<type>\n<data>".
func decodeMessage(topic, payload string) (item, bool) {
	id, rest, ok1 := strings.Cut(payload, "\n")
	typ, data, ok2 := strings.Cut(rest, "\n")
	if !ok1 || !ok2 {
		return item{}, false
	}
	epoch, sid, ok := parseID(id)
	if !ok {
		return item{}, false
	}
	return item{epoch: epoch, id: sid, ev: &broker.Event{
		Kind: broker.KindEvent, Topic: topic, ID: id, Type: typ, Data: data, Time: timeOf(sid),
	}}, true
}
