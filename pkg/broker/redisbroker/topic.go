package redisbroker

import (
	"errors"
	"slices"
	"sort"
	"sync"

	"github.com/herald-sse/herald/pkg/broker"
)

// topic is the replica-local state of one topic with local subscribers.
//
// Members are either loading (waiting for their replay) or live (in sync:
// every live event is pushed to them as it arrives). A load round reads the
// stream once for all loading members (and for the live ones when the topic
// is stale), then merges under mu: replay, then the live events buffered
// since the read started, skipping by ID what a member already has.
type topic struct {
	name    string
	channel string
	tag     string // topicTag(name)
	slot    int    // Redis Cluster hash slot of its keys and channel
	sh      *shard // the shard carrying its channel (nil: none yet, Cluster); guarded by Broker.mu

	mu          sync.Mutex // guards the fields below; taken after Broker.mu
	live        []*member  // member.idx is the index here
	loading     []*member
	confirmed   bool   // the channel is subscribed on its shard's current connection
	inval       uint64 // bumped by anything that voids a round in progress
	stale       bool   // live members may have missed events: refill them
	lapsed      bool   // the subscription lapsed since live members were last in sync
	epoch       string // epoch of the live members
	buf         []item // live events received while loading or stale, since the last confirmation: one contiguous run of one epoch
	bufOverflow bool
	// covered: buf holds every event of coverEpoch published after cover
	// (see view.covered). Set by a round whose read was answered while the
	// subscription was confirmed; cleared with the buffer.
	covered    bool
	cover      streamID
	coverEpoch string
	removed    bool // no members left: dropped from Broker.topics
	// recent: IDs of the last events of recentEpoch delivered to live
	// members (at most Broker.recentCap, oldest first; Sentinel only). A
	// refill checks them against the stream: one the stream lacks
	// although it holds entries around it was lost to a failover.
	recent      []streamID
	recentEpoch string

	// Guarded by Broker.wmu.
	queued, running, dirty bool
	// Used only by the worker running the topic's round.
	failures uint
}

// member is one subscription's membership in one topic.
type member struct {
	s *subscription
	t *topic

	// Guarded by t.mu.
	idx       int
	live      bool
	gone      bool
	started   bool   // its KindPosition was delivered
	cursor    string // loading: the cursor to start after
	timeBased bool   // loading: start at entries stamped >= startMs instead
	startMs   uint64
	epoch     string   // live: epoch of pos
	pos       streamID // live: last position delivered
	atEvent   bool     // live: pos is the ID of an event delivered (not a bare position)
}

// item is a decoded event with its parsed ID.
type item struct {
	epoch string
	id    streamID
	ev    *broker.Event
}

// errBufBehind: a round waits for live events the buffer must have before
// it can deliver; the worker retries it with backoff.
var errBufBehind = errors.New("redisbroker: waiting for the live events of a trimmed stream")

// round loads the topic's loading members, and refills its live members if
// the topic is stale. It returns again=true when more work is pending, and
// an error when Redis failed (the caller retries with backoff).
func (b *Broker) round(t *topic) (again bool, err error) {
	var slow []*subscription
	again, err = b.runRound(t, &slow)
	for _, s := range slow {
		s.End(broker.ErrSlowConsumer)
	}
	return again, err
}

// runRound does the work of round; live members whose queue overflowed
// are appended to slow, to be ended once t.mu is released.
//
// The round reads the stream's state, plans every member (planMember),
// reads the entries after the lowest start, and merges under t.mu: for each
// member, the union of those entries and of the live events buffered since
// the topic's subscription was confirmed (t.buf), after the member's start.
// The buffer is kept across rounds until one succeeds, so a member whose
// position it holds misses nothing even when the stream was trimmed past
// it; and every event published after the read is in it, so the union is
// gap-free.
func (b *Broker) runRound(t *topic, slow *[]*subscription) (again bool, err error) {
	t.mu.Lock()
	if t.removed || !t.confirmed || (len(t.loading) == 0 && !t.stale) {
		t.mu.Unlock()
		return false, nil
	}
	type snap struct {
		m  *member
		ms memberState
	}
	var snaps []snap
	for _, m := range t.loading {
		snaps = append(snaps, snap{m, memberState{cursor: m.cursor, timeBased: m.timeBased, startMs: m.startMs}})
	}
	var delivered []int // snaps of live members whose position is an event they received
	var liveSnaps []int
	var recent []streamID
	recentEpoch := t.recentEpoch
	if t.stale {
		recent = slices.Clone(t.recent)
		for _, m := range t.live {
			if m.atEvent {
				delivered = append(delivered, len(snaps))
			}
			liveSnaps = append(liveSnaps, len(snaps))
			snaps = append(snaps, snap{m, memberState{live: true, epoch: m.epoch, pos: m.pos}})
		}
	}
	wasStale := t.stale
	inval := t.inval
	v := view{tag: t.tag, lapsed: t.lapsed, covered: t.covered, cover: t.cover, coverEpoch: t.coverEpoch}
	if len(t.buf) > 0 {
		v.bufEpoch = t.buf[0].epoch
		v.buf = make([]streamID, len(t.buf))
		for i, it := range t.buf {
			v.buf[i] = it.id
		}
	}
	t.bufOverflow = false
	t.mu.Unlock()

	r, err := b.read(b.ctx, t.name, streamID{}, 0)
	if err != nil {
		return false, err
	}
	if isNoEpoch(r.epoch) {
		// Positions taken now must belong to an incarnation of the topic.
		if _, err := b.touch(b.ctx, t.name); err != nil {
			return false, err
		}
		if r, err = b.read(b.ctx, t.name, streamID{}, 0); err != nil {
			return false, err
		}
	}
	st := stateOf(r)
	v.st = st
	// Events delivered to live members that the stream no longer has,
	// although it holds entries around them, were lost to a failover
	// (Sentinel: recent is on): every live member at or past the first
	// of them received it.
	if wasStale && len(recent) > 0 && recentEpoch == st.epoch {
		lost, err := b.firstLost(t.name, st, recent)
		if err != nil {
			return false, err
		}
		if lost != nil {
			b.log.Warn("redisbroker: events delivered live are gone from the topic's stream (lost to a failover); resetting its subscribers", "topic", t.name, "first", lost.String())
			for _, i := range liveSnaps {
				if ms := &snaps[i].ms; ms.epoch == st.epoch && !ms.pos.less(*lost) {
					ms.missing = true
				}
			}
		}
	}
	// A live member whose last event is not in the stream although the
	// stream holds entries around it lost it to a failover. Refills only:
	// one exact read per distinct position.
	found := map[streamID]bool{}
	for _, i := range delivered {
		ms := &snaps[i].ms
		if ms.epoch != st.epoch || st.length == 0 || ms.pos.less(st.first) || st.last.less(ms.pos) || v.inBuf(ms.epoch, ms.pos) {
			continue // another epoch, trimmed, ahead of the stream, or seen live since the resubscription: planMember decides
		}
		ok, seen := found[ms.pos]
		if !seen {
			r, err := b.read(b.ctx, t.name, ms.pos.pred(), 1)
			if err != nil {
				return false, err
			}
			if r.epoch != st.epoch {
				return true, nil
			}
			ok = len(r.entries) > 0 && r.entries[0].id == ms.pos
			found[ms.pos] = ok
		}
		ms.missing = ms.missing || !ok
	}
	plans := make([]plan, len(snaps))
	for i, sn := range snaps {
		plans[i] = planMember(v, sn.ms)
	}

	// One read from the lowest start serves every member.
	after := plans[0].from
	for _, p := range plans[1:] {
		if p.from.less(after) {
			after = p.from
		}
	}
	var items []item
	headLast := st.last   // events after it were published after the head was read
	streamLast := st.last // the last entry any read found
	startOver := false    // entries a member needs were trimmed during the round
	for !isNoEpoch(st.epoch) {
		r, err := b.read(b.ctx, t.name, after, pageSize)
		if err != nil {
			return false, err
		}
		if r.epoch != st.epoch {
			return true, nil
		}
		streamLast = max2(streamLast, r.last)
		if r.added > r.length {
			// Entries after the read position were trimmed since the
			// state was read. A member that needs them and cannot have
			// them from the buffer makes the round start over (the next
			// state reports the trim); the buffer holds every event
			// published after the head was read, which the next round
			// knows (noteCover below).
			gone := r.last
			if r.length > 0 {
				gone = r.first.pred()
			}
			if after.less(gone) && slices.ContainsFunc(plans, func(p plan) bool { return !p.viaBuf && p.from.less(gone) }) {
				startOver = true
				break
			}
		}
		for _, e := range r.entries {
			items = append(items, item{epoch: st.epoch, id: e.id, ev: &broker.Event{
				Kind: broker.KindEvent, Topic: t.name, ID: formatID(st.epoch, e.id),
				Type: e.typ, Data: e.data, Time: timeOf(e.id),
			}})
		}
		// A page may be short (its bytes are bounded): the end is an
		// empty page or the stream's last entry at the time of the read.
		if len(r.entries) == 0 || !r.entries[len(r.entries)-1].id.less(r.last) {
			if st.last.less(r.last) {
				st.last = r.last
			}
			break
		}
		after = r.entries[len(r.entries)-1].id
	}

	t.mu.Lock()
	defer t.mu.Unlock()
	if t.removed {
		return false, nil
	}
	if t.inval != inval || t.bufOverflow {
		return true, nil
	}
	if len(t.buf) > 0 && t.buf[0].epoch != st.epoch {
		// The stream changed epoch around the read, or the buffer holds
		// an epoch the stream no longer has: neither can be merged. Start
		// over with what arrives from now on.
		t.restartBuf()
		return true, nil
	}
	// The head was read while the subscription was confirmed (inval is
	// unchanged) and the buffer ran throughout: it holds every event
	// published after headLast.
	t.noteCover(st.epoch, headLast)
	if startOver {
		return true, nil
	}
	if slices.ContainsFunc(plans, func(p plan) bool { return p.viaBuf }) {
		// Some member needs trimmed events from the buffer. It has them
		// only if the subscription really was alive (a connection dead
		// without knowing it yet is still "confirmed"): its events must
		// have caught up with the stream's. They are usually in flight;
		// a dead connection is replaced within seconds, which restarts
		// the buffer and lets the next round reset honestly.
		if n := len(t.buf); n == 0 || t.buf[n-1].id.less(streamLast) {
			return false, errBufBehind
		}
	}
	if !wasStale && len(t.live) > 0 && t.epoch != st.epoch {
		// The stream changed epoch, seen by reading it rather than by a
		// message on the subscription: nothing proves the live members
		// got every event of the old epoch (the connection may be dead
		// without knowing it yet, as after a restart without data).
		t.stale = true
		t.lapsed = true
		t.inval++
		return true, nil
	}
	var out []*broker.Event
	for i, p := range plans {
		m := snaps[i].m
		if m.gone {
			continue
		}
		out = out[:0]
		if p.reset != "" {
			out = append(out, &broker.Event{Kind: broker.KindReset, Topic: t.name, Reason: p.reset})
		}
		if p.position {
			posID := p.from
			if p.timeBased {
				k := sort.Search(len(items), func(i int) bool { return p.from.less(items[i].id) })
				if k < len(items) {
					posID = items[k].id.pred()
				} else {
					// Nothing stamped after the start yet: the position
					// is the stream's last entry, never the start time
					// itself, which is ahead of the stream and would get
					// an unknown-cursor reset on resume.
					posID = st.last
					if n := len(items); n > 0 {
						posID = max2(posID, items[n-1].id)
					}
				}
			}
			id := p.cursor
			if id == "" {
				id = formatID(st.epoch, posID)
			}
			out = append(out, &broker.Event{Kind: broker.KindPosition, Topic: t.name, ID: id})
			p.from = posID
		}
		pos := p.from
		n := len(out)
		got := false
		mergeAfter(items, t.buf, p.from, func(it item) {
			out = append(out, it.ev)
			pos = it.id
			got = true
		})
		// pos stays an event's ID if it was one and the member goes on
		// from it (a live member without reset).
		m.atEvent = got || m.atEvent && p.live && p.reset == "" && !p.position && p.from == m.pos
		if p.live {
			b.refilled.Add(int64(len(out) - n))
		}
		m.epoch, m.pos = st.epoch, pos
		if p.live {
			if len(out) > 0 && !m.s.Refill(out...) {
				*slow = append(*slow, m.s)
			}
		} else if len(out) > 0 {
			m.s.Preload(out...)
		}
		if p.live && b.recentCap > 0 {
			for _, e := range out[n:] {
				if _, sid, ok := parseID(e.ID); ok {
					t.noteDelivered(b.recentCap, st.epoch, sid)
				}
			}
		}
		if !m.started {
			m.started = true
			if m.s.pending.Add(-1) == 0 {
				m.s.wakeLoaded()
			}
		}
		if !m.live {
			if i := indexOf(t.loading, m); i >= 0 {
				t.loading = append(t.loading[:i], t.loading[i+1:]...)
			}
			m.live = true
			m.idx = len(t.live)
			t.live = append(t.live, m)
		}
	}
	if wasStale {
		// Checked against this stream: what follows is checked at the
		// next refill.
		t.recent = t.recent[:0]
	}
	t.epoch = st.epoch
	t.stale = false
	t.lapsed = false
	t.restartBuf()
	return len(t.loading) > 0, nil
}

// noteDelivered records the ID of an event delivered to live members in
// recent, keeping the last max of one epoch. Call with t.mu held.
func (t *topic) noteDelivered(max int, epoch string, id streamID) {
	if max == 0 {
		return
	}
	if t.recentEpoch != epoch {
		t.recent, t.recentEpoch = t.recent[:0], epoch
	}
	if n := len(t.recent); n > 0 && !t.recent[n-1].less(id) {
		return // already there (a refill delivers what some members had)
	}
	if len(t.recent) == max {
		// Drop the older half: one copy per max/2 events.
		t.recent = t.recent[:copy(t.recent, t.recent[max/2:])]
	}
	t.recent = append(t.recent, id)
}

// recentFailover is Broker.recentCap with Sentinel: the live events per
// topic a refill checks against the stream after a failover (at least
// half of it is kept). Losses followed by more events than half this before
// the refill (the demoted primary
// relaying the new one's events to a pub/sub connection not replaced yet)
// go undetected.
const recentFailover = 256

// firstLost returns the first of recent (sorted, of the stream's epoch)
// that the stream lacks although it holds entries after it, or nil. It
// reads the stream from the first of recent that is still retained, at
// most two pages; past that it finds nothing (no verdict).
func (b *Broker) firstLost(topic string, st streamState, recent []streamID) (*streamID, error) {
	i := sort.Search(len(recent), func(i int) bool { return !recent[i].less(st.first) })
	recent = recent[i:]
	if st.length == 0 || len(recent) == 0 {
		return nil, nil
	}
	after := recent[0].pred()
	k := 0 // recent[:k] are in the stream
	for range 2 {
		r, err := b.read(b.ctx, topic, after, pageSize)
		if err != nil {
			return nil, err
		}
		if r.epoch != st.epoch {
			return nil, nil
		}
		if len(r.entries) == 0 {
			return &recent[k], nil // the stream ends before it
		}
		for _, e := range r.entries {
			if recent[k].less(e.id) {
				return &recent[k], nil // the stream went past it
			}
			if recent[k] == e.id {
				if k++; k == len(recent) {
					return nil, nil
				}
			}
		}
		after = r.entries[len(r.entries)-1].id
	}
	return nil, nil // not read that far: no verdict
}

// restartBuf empties the buffer: what arrives next starts a new run. A
// round in progress cannot rely on the old run: it is voided.
func (t *topic) restartBuf() {
	clear(t.buf)
	t.buf = t.buf[:0]
	t.covered = false
	t.inval++
}

// noteCover records that the buffer holds every event of epoch after last:
// a read of the stream that found last as its last entry was answered while
// the subscription was confirmed and the buffer ran (t.mu held, the round's
// inval unchanged, no overflow).
func (t *topic) noteCover(epoch string, last streamID) {
	if t.covered && t.coverEpoch == epoch && t.cover.less(last) {
		return // an earlier read covers more
	}
	t.covered, t.cover, t.coverEpoch = true, last, epoch
}

func indexOf(ms []*member, m *member) int {
	for i, x := range ms {
		if x == m {
			return i
		}
	}
	return -1
}

func max2(a, b streamID) streamID {
	if a.less(b) {
		return b
	}
	return a
}
