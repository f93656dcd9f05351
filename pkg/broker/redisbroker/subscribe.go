package redisbroker

import (
	"context"
	"slices"
	"sync/atomic"
	"time"

	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/broker/brokerutil"
)

// Subscribe implements broker.Broker.
//
// A topic missing from from starts at the stream's head, read here with a
// timeout of one second. Subscribe then waits, up to another second, until
// every topic's first items (a KindReset if the cursor cannot be honoured,
// a KindPosition, the replay) are queued, so they are pending when it
// returns; whatever is not ready by then follows asynchronously.
//
// If Redis does not answer the head read in time, Subscribe returns at
// once with a registered subscription whose items start once Redis is
// back. Its live topics then start with the stream's entries stamped at
// most one second (clock-skew tolerance) before Subscribe was called: no
// event published after Subscribe returned is missed, at the cost of
// possibly a few published just before.
func (b *Broker) Subscribe(ctx context.Context, topics []string, from broker.Cursor) (broker.Subscription, error) {
	if err := broker.ValidateTopics(topics); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if b.isClosed.Load() {
		return nil, broker.ErrClosed
	}
	startMs := uint64(max(time.Now().Add(-clockSkew).UnixMilli(), 0))
	cursors := make([]string, len(topics))
	var live []int
	for i, name := range topics {
		cursors[i] = from[name]
		if cursors[i] == "" {
			live = append(live, i)
		}
	}
	timeBased := false
	if len(live) > 0 {
		// Bounded by headTimeout and cut short by ctx, without a child
		// context of ctx (which would make ctx's Done channel, kept as
		// long as the subscription by a context that makes it lazily).
		hctx, cancel := context.WithTimeout(context.Background(), headTimeout)
		stopCancel := brokerutil.AfterFunc(ctx, cancel)
		for _, i := range live {
			r, err := b.read(hctx, topics[i], streamID{}, 0)
			if err != nil {
				timeBased = true
				break
			}
			if isNoEpoch(r.epoch) {
				// Before the first event: the position belongs to an
				// epoch all the same (see touch).
				if r.epoch, err = b.touch(hctx, topics[i]); err != nil {
					timeBased = true
					break
				}
				r.last = streamID{}
			}
			cursors[i] = formatID(r.epoch, r.last)
		}
		stopCancel()
		cancel()
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}

	s := &subscription{b: b}
	loaded := make(chan struct{})
	if !timeBased {
		s.loaded.Store(&loaded)
	}
	s.Init(b.queueLimit, func() { b.release(s) })
	s.pending.Store(int32(len(topics)))
	var ts []*topic
	newTopic := false
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, broker.ErrClosed
	}
	for i, name := range topics {
		ch := b.channel(name)
		t := b.topics[ch]
		if t == nil {
			t = &topic{name: name, channel: ch, tag: topicTag(name), slot: keySlot(ch), epoch: noEpoch}
			t.sh = b.shardOf(t.slot)
			t.confirmed = t.sh != nil && t.sh.confirmed[ch]
			b.topics[ch] = t
			newTopic = true
		}
		m := &member{s: s, t: t, cursor: cursors[i]}
		if timeBased && from[name] == "" {
			m.cursor, m.timeBased, m.startMs = "", true, startMs
		}
		t.mu.Lock()
		t.loading = append(t.loading, m)
		t.mu.Unlock()
		s.members = append(s.members, m)
		ts = append(ts, t)
	}
	b.subs[s] = struct{}{}
	var signal []*shard // of the topics (t.sh is guarded by b.mu)
	unrouted := false
	if newTopic {
		for _, t := range ts {
			if t.sh != nil {
				signal = append(signal, t.sh)
			} else {
				unrouted = true
			}
		}
	}
	b.mu.Unlock()
	for _, sh := range signal {
		sh.signalReconcile()
	}
	if unrouted {
		b.signalRoute()
	}
	for _, t := range ts {
		b.schedule(t)
	}
	s.EndWhenDone(ctx)
	if timeBased {
		return s, nil
	}
	// Redis answered: wait (briefly) for the replay to be queued, so that
	// a consumer finds it pending as soon as Subscribe returns.
	// The wait ends early if ctx does (EndWhenDone ends s, whose release
	// closes loaded); the subscription keeps no channel afterwards.
	timer := time.NewTimer(headTimeout)
	defer timer.Stop()
	select {
	case <-loaded:
	case <-timer.C:
	}
	s.loaded.Store(nil)
	if err := ctx.Err(); err != nil {
		s.End(err)
		return nil, err
	}
	return s, nil
}

// release removes s from its topics; a topic without members is dropped
// and its channel unsubscribed.
func (b *Broker) release(s *subscription) {
	s.wakeLoaded()
	var changed []*shard
	b.mu.Lock()
	delete(b.subs, s)
	for _, m := range s.members {
		t := m.t
		t.mu.Lock()
		if !m.gone {
			m.gone = true
			if m.live {
				last := t.live[len(t.live)-1]
				t.live[m.idx] = last
				last.idx = m.idx
				t.live[len(t.live)-1] = nil
				t.live = t.live[:len(t.live)-1]
			} else if i := slices.Index(t.loading, m); i >= 0 {
				t.loading = slices.Delete(t.loading, i, i+1)
			}
			if len(t.live)+len(t.loading) == 0 && !t.removed {
				t.removed = true
				clear(t.buf)
				t.buf = nil
				delete(b.topics, t.channel)
				if t.sh != nil {
					delete(t.sh.subFails, t.channel)
					changed = append(changed, t.sh)
				}
			}
		}
		t.mu.Unlock()
	}
	b.mu.Unlock()
	for _, sh := range changed {
		sh.signalReconcile()
	}
}

// subscription implements broker.Subscription on a brokerutil.Sub, which
// releases it from the broker when it ends.
type subscription struct {
	brokerutil.Sub
	b       *Broker
	members []*member                     // set before the subscription is published
	pending atomic.Int32                  // members whose KindPosition is not queued yet
	loaded  atomic.Pointer[chan struct{}] // while Subscribe waits: closed when pending reaches 0, or s ends
}

// wakeLoaded wakes the Subscribe waiting for s's replay, if one still is:
// every member's position is queued, or s ended.
func (s *subscription) wakeLoaded() {
	if ch := s.loaded.Swap(nil); ch != nil {
		close(*ch)
	}
}
