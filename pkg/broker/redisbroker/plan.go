package redisbroker

import (
	"sort"

	"github.com/herald-sse/herald/pkg/broker"
)

// The planning of a load round, kept free of I/O and locks so that every
// case is a table test (plan_test.go): given what the stream holds, what the
// replica buffered from pub/sub and where a member stands, decide what the
// member gets — a reset or not, and from which position on.

// streamState is the head of <fn>_read: the stream as the round read it.
type streamState struct {
	epoch         string   // noEpochOf(tag) when the topic has none
	first, last   streamID // first entry (valid if length > 0), last-generated-id
	length, added int64
}

func stateOf(r readResult) streamState {
	return streamState{epoch: r.epoch, first: r.first, last: r.last, length: r.length, added: r.added}
}

// retained is the position after which the stream holds every entry.
func (s streamState) retained() streamID {
	if s.length > 0 {
		return s.first.pred()
	}
	return s.last
}

// lost reports whether entries were ever trimmed from the stream.
func (s streamState) lost() bool { return s.added > s.length }

// view is what a round knows besides the stream.
type view struct {
	st  streamState
	tag string // topicTag of the topic
	// lapsed: the pub/sub subscription of the topic lapsed (the connection
	// dropped or was replaced, the channel was resubscribed) since the
	// live members were last in sync, so they may have missed events.
	// While it is false they have every event published, whatever the
	// stream keeps.
	lapsed bool
	// buf: IDs of the live events buffered since the topic's pub/sub
	// subscription was last confirmed (or the buffer last restarted): a
	// contiguous run of the log, every event published since, in order,
	// all of epoch bufEpoch. A member whose position is in it misses
	// nothing, however much of the stream was trimmed meanwhile.
	buf      []streamID
	bufEpoch string
	// covered: every event of coverEpoch published after cover reached
	// the buffer (a read of the stream whose last entry was cover was
	// answered while the subscription was confirmed, and the buffer has
	// not restarted since). Like buf, it holds only if the subscription
	// was really alive: a round relying on it checks that the buffer has
	// caught up with the stream before delivering (see plan.viaBuf).
	covered    bool
	cover      streamID
	coverEpoch string
}

// fromBuf reports whether the buffer holds every event after pos of epoch.
func (v view) fromBuf(epoch string, pos streamID) bool {
	return v.covered && epoch == v.coverEpoch && !pos.less(v.cover) || v.inBuf(epoch, pos)
}

func (v view) inBuf(epoch string, pos streamID) bool {
	if epoch != v.bufEpoch || len(v.buf) == 0 {
		return false
	}
	i := sort.Search(len(v.buf), func(i int) bool { return !v.buf[i].less(pos) })
	return i < len(v.buf) && v.buf[i] == pos
}

// memberState is a member as a round found it.
type memberState struct {
	live bool
	// loading members: the cursor to start after, or a time-based start
	// (Subscribe could not read the head: start with the entries stamped
	// at or after startMs).
	cursor    string
	timeBased bool
	startMs   uint64
	// live members: where they stand.
	epoch string
	pos   streamID
	// missing: pos is an event the member received that the stream no
	// longer holds although it holds entries around it (lost to a
	// failover); the round looked it up.
	missing bool
}

// plan is what a round decided for one member.
type plan struct {
	reset     broker.ResetReason // reason, or ""
	from      streamID           // deliver entries after this
	position  bool               // deliver a KindPosition
	cursor    string             // the ID of that position when the cursor was honoured
	live      bool               // a live member being refilled: its items count against its queue limit
	timeBased bool               // the position is the entry before the first one delivered
	// viaBuf: the events after from are whole only with the buffer's (the
	// stream was trimmed past from): deliver only once the buffer has
	// caught up with the stream, which proves the subscription alive.
	viaBuf bool
}

// planMember decides where m continues.
func planMember(v view, m memberState) plan {
	st := v.st
	retained := st.retained()
	p := plan{position: !m.live, live: m.live}
	if m.timeBased {
		start := streamID{m.startMs, 0}.pred()
		switch {
		case isNoEpoch(st.epoch):
			// Nothing was ever published (or nothing is left): all new.
		case st.lost() && start.less(retained):
			// Entries stamped after the start were trimmed before the
			// round could read them.
			p.reset = broker.ReasonTruncated
		default:
			p.from, p.timeBased = max2(start, retained), true
		}
		if p.reset != "" {
			p.from = retained
		}
		return p
	}
	var (
		epoch string
		pos   streamID
		ok    = true
	)
	if m.live {
		epoch, pos = m.epoch, m.pos
	} else {
		epoch, pos, ok = parseID(m.cursor)
	}
	tag := epochTag(epoch)
	switch {
	case !ok, tag != "" && tag != v.tag:
		// Not a position of this broker, or one of another topic.
		p.reset = broker.ReasonUnknown
	case isNoEpoch(epoch) && pos != (streamID{}):
		p.reset = broker.ReasonUnknown
	case isNoEpoch(epoch):
		// The subscriber saw the topic without an epoch: any epoch now was
		// created after that, all of it is new — unless some was trimmed.
		if st.lost() && !isNoEpoch(st.epoch) {
			p.reset = broker.ReasonTruncated
		} else if !m.live {
			p.cursor = m.cursor
		}
	case epoch != st.epoch && m.live && !v.lapsed:
		// The stream was replaced (its keys expired, were deleted or
		// evicted) while this replica's subscription never lapsed: the
		// member has every event of its epoch, and the new epoch is new.
		if st.lost() && !isNoEpoch(st.epoch) {
			p.reset = broker.ReasonTruncated
		}
		p.position = true
		return p.fromStart(st)
	case epoch != st.epoch:
		p.reset = broker.ReasonEpoch
	case m.live && m.missing:
		p.reset = broker.ReasonFailover
	case st.last.less(pos) && !v.inBuf(epoch, pos) && m.live:
		// The member received events the stream never reached: the
		// primary that had them is gone and a replica without them was
		// promoted.
		p.reset = broker.ReasonFailover
	case st.last.less(pos) && !v.inBuf(epoch, pos):
		p.reset = broker.ReasonUnknown // a position the stream never reached
	case st.lost() && pos.less(retained) && !v.fromBuf(epoch, pos):
		p.reset = broker.ReasonTruncated
	default:
		p.from = pos
		p.viaBuf = st.lost() && pos.less(retained)
		if !m.live {
			p.cursor = m.cursor
		}
		return p
	}
	if p.reset != "" {
		p.position = true
		p.from = retained
		return p
	}
	return p.fromStart(st)
}

// fromStart makes p start at the beginning of the stream's epoch (or at
// what is retained of it, after a reset).
func (p plan) fromStart(st streamState) plan {
	if p.reset != "" {
		p.from = st.retained()
	} else {
		p.from = streamID{}
	}
	return p
}

// mergeAfter calls emit for every item of a and b (each sorted by ID)
// after from, in ID order, once per ID.
func mergeAfter(a, b []item, from streamID, emit func(item)) {
	i := sort.Search(len(a), func(i int) bool { return from.less(a[i].id) })
	j := sort.Search(len(b), func(j int) bool { return from.less(b[j].id) })
	for i < len(a) || j < len(b) {
		switch {
		case j == len(b) || i < len(a) && a[i].id.less(b[j].id):
			emit(a[i])
			i++
		case i == len(a) || b[j].id.less(a[i].id):
			emit(b[j])
			j++
		default: // the same event in both
			emit(a[i])
			i++
			j++
		}
	}
}
