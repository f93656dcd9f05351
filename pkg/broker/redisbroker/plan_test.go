package redisbroker

import (
	"testing"

	"github.com/herald-sse/herald/pkg/broker"
)

// Table tests of planMember: every case a round can meet, without Redis.
func TestPlanMember(t *testing.T) {
	const topic = "orders"
	tag := topicTag(topic)
	e1, e2 := "1_"+tag, "2_"+tag // born at time 0: before every entry
	foreignEpoch := "1_" + topicTag("other")
	id := func(ms uint64) streamID { return streamID{ms, 0} }
	// A stream of epoch e1 holding entries 10..20 (ms), 5 trimmed before.
	trimmed := streamState{epoch: e1, first: id(10), last: id(20), length: 11, added: 16}
	whole := streamState{epoch: e1, first: id(10), last: id(20), length: 11, added: 11}
	empty := streamState{epoch: noEpochOf(tag)}
	type want struct {
		reset    broker.ResetReason
		from     streamID
		position bool
		cursor   string
		viaBuf   bool
	}
	cases := []struct {
		name string
		v    view
		m    memberState
		want want
	}{
		// Cursors of loading members.
		{"honoured cursor", view{st: whole}, memberState{cursor: formatID(e1, id(12))},
			want{from: id(12), position: true, cursor: formatID(e1, id(12))}},
		{"garbage", view{st: whole}, memberState{cursor: "nope"},
			want{reset: broker.ReasonUnknown, from: id(10).pred(), position: true}},
		{"item 1: a position of another topic", view{st: whole}, memberState{cursor: formatID(foreignEpoch, id(12))},
			want{reset: broker.ReasonUnknown, from: id(10).pred(), position: true}},
		{"item 1: another topic's empty position", view{st: whole}, memberState{cursor: formatID(noEpochOf(topicTag("other")), streamID{})},
			want{reset: broker.ReasonUnknown, from: id(10).pred(), position: true}},
		{"release-1 position without a tag, same epoch", view{st: streamState{epoch: "hoqm1", first: id(10), last: id(20), length: 11, added: 11}},
			memberState{cursor: "hoqm1-12-0"}, want{from: id(12), position: true, cursor: "hoqm1-12-0"}},
		{"another epoch", view{st: whole}, memberState{cursor: formatID(e2, id(12))},
			want{reset: broker.ReasonEpoch, from: id(10).pred(), position: true}},
		{"ahead of the stream", view{st: whole}, memberState{cursor: formatID(e1, id(25))},
			want{reset: broker.ReasonUnknown, from: id(10).pred(), position: true}},
		{"trimmed past the cursor", view{st: trimmed}, memberState{cursor: formatID(e1, id(5))},
			want{reset: broker.ReasonTruncated, from: id(10).pred(), position: true}},
		{"at the trim boundary", view{st: trimmed}, memberState{cursor: formatID(e1, id(10).pred())},
			want{from: id(10).pred(), position: true, cursor: formatID(e1, id(10).pred())}},
		{"nothing ever trimmed: an old cursor is fine", view{st: whole}, memberState{cursor: formatID(e1, id(3))},
			want{from: id(3), position: true, cursor: formatID(e1, id(3))}},
		{"empty position, topic now has events", view{st: whole}, memberState{cursor: formatID(noEpochOf(tag), streamID{})},
			want{from: streamID{}, position: true, cursor: formatID(noEpochOf(tag), streamID{})}},
		{"empty position, events trimmed since", view{st: trimmed}, memberState{cursor: formatID(noEpochOf(tag), streamID{})},
			want{reset: broker.ReasonTruncated, from: id(10).pred(), position: true}},
		{"empty position that claims an entry", view{st: whole}, memberState{cursor: formatID(noEpochOf(tag), id(3))},
			want{reset: broker.ReasonUnknown, from: id(10).pred(), position: true}},
		// Issue 10: a live member that received events the stream lost to
		// a failover gets a failover reset and the retained history.
		{"failover: a live member ahead of the stream", view{st: whole, lapsed: true},
			memberState{live: true, epoch: e1, pos: id(25)}, want{reset: broker.ReasonFailover, from: id(10).pred(), position: true}},
		{"failover: a live member's last event missing from the stream", view{st: whole, lapsed: true},
			memberState{live: true, epoch: e1, pos: id(15), missing: true}, want{reset: broker.ReasonFailover, from: id(10).pred(), position: true}},
		{"failover: ahead of the stream but the event is in the buffer", view{st: whole, lapsed: true, buf: []streamID{id(25)}, bufEpoch: e1},
			memberState{live: true, epoch: e1, pos: id(25)}, want{from: id(25)}},
		// Item 5: the buffered run proves a trimmed cursor missed nothing.
		{"item 5: trimmed, but the position is in the buffer", view{st: trimmed, buf: []streamID{id(4), id(5), id(6)}, bufEpoch: e1},
			memberState{cursor: formatID(e1, id(5))}, want{from: id(5), position: true, cursor: formatID(e1, id(5)), viaBuf: true}},
		{"item 5: live member trimmed, in the buffer", view{st: trimmed, buf: []streamID{id(4), id(5), id(6)}, bufEpoch: e1, lapsed: true},
			memberState{live: true, epoch: e1, pos: id(5)}, want{from: id(5), viaBuf: true}},
		// Item 5: a read answered while subscribed (the cover) proves the
		// buffer holds every event after it, even before the buffer's first.
		{"item 5: trimmed, the cursor at the cover", view{st: trimmed, covered: true, cover: id(5), coverEpoch: e1},
			memberState{cursor: formatID(e1, id(5))}, want{from: id(5), position: true, cursor: formatID(e1, id(5)), viaBuf: true}},
		{"item 5: live member trimmed, after the cover", view{st: trimmed, covered: true, cover: id(5), coverEpoch: e1, lapsed: true},
			memberState{live: true, epoch: e1, pos: id(7)}, want{from: id(7), viaBuf: true}},
		{"item 5: trimmed, the cursor before the cover", view{st: trimmed, covered: true, cover: id(5), coverEpoch: e1},
			memberState{cursor: formatID(e1, id(4))}, want{reset: broker.ReasonTruncated, from: id(10).pred(), position: true}},
		{"item 5: a cover of another epoch proves nothing", view{st: trimmed, covered: true, cover: id(5), coverEpoch: e2},
			memberState{cursor: formatID(e1, id(5))}, want{reset: broker.ReasonTruncated, from: id(10).pred(), position: true}},
		{"item 5: cursor retained: the stream alone serves it", view{st: trimmed, covered: true, cover: id(5), coverEpoch: e1},
			memberState{cursor: formatID(e1, id(12))}, want{from: id(12), position: true, cursor: formatID(e1, id(12))}},
		{"item 5: live member trimmed, before the buffer", view{st: trimmed, buf: []streamID{id(4), id(5), id(6)}, bufEpoch: e1, lapsed: true},
			memberState{live: true, epoch: e1, pos: id(3)}, want{reset: broker.ReasonTruncated, from: id(10).pred(), position: true}},
		{"item 5: the buffer of another epoch proves nothing", view{st: trimmed, buf: []streamID{id(5)}, bufEpoch: e2},
			memberState{cursor: formatID(e1, id(5))}, want{reset: broker.ReasonTruncated, from: id(10).pred(), position: true}},
		{"buffer ahead of the stream read", view{st: whole, buf: []streamID{id(21), id(22)}, bufEpoch: e1},
			memberState{cursor: formatID(e1, id(22))}, want{from: id(22), position: true, cursor: formatID(e1, id(22))}},
		// Live members whose stream changed epoch.
		{"live, subscription lapsed, new epoch", view{st: whole, lapsed: true}, memberState{live: true, epoch: e2, pos: id(3)},
			want{reset: broker.ReasonEpoch, from: id(10).pred(), position: true}},
		{"live, never lapsed, stream replaced (keys expired)", view{st: whole}, memberState{live: true, epoch: e2, pos: id(3)},
			want{from: streamID{}, position: true}},
		{"live, never lapsed, stream replaced and trimmed", view{st: trimmed}, memberState{live: true, epoch: e2, pos: id(3)},
			want{reset: broker.ReasonTruncated, from: id(10).pred(), position: true}},
		{"live, never lapsed, stream gone", view{st: empty}, memberState{live: true, epoch: e1, pos: id(3)},
			want{from: streamID{}, position: true}},
		{"live refill in sync", view{st: whole, lapsed: true}, memberState{live: true, epoch: e1, pos: id(15)},
			want{from: id(15)}},
		// Item 4: a start while Redis was down.
		{"item 4: time-based, nothing trimmed", view{st: whole}, memberState{timeBased: true, startMs: 12},
			want{from: id(12).pred(), position: true}},
		{"item 4: time-based, trimmed past the start", view{st: trimmed}, memberState{timeBased: true, startMs: 5},
			want{reset: broker.ReasonTruncated, from: id(10).pred(), position: true}},
		{"item 4: time-based, start before a trim that kept it", view{st: trimmed}, memberState{timeBased: true, startMs: 15},
			want{from: id(15).pred(), position: true}},
		{"time-based, no stream", view{st: empty}, memberState{timeBased: true, startMs: 12},
			want{from: streamID{}, position: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.v.tag = tag
			p := planMember(tc.v, tc.m)
			got := want{reset: p.reset, from: p.from, position: p.position, cursor: p.cursor, viaBuf: p.viaBuf}
			if got != tc.want {
				t.Errorf("planMember = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestMergeAfter(t *testing.T) {
	mk := func(ms ...uint64) []item {
		var out []item
		for _, m := range ms {
			out = append(out, item{id: streamID{m, 0}})
		}
		return out
	}
	var got []uint64
	mergeAfter(mk(10, 11, 12, 13), mk(5, 6, 12, 13, 14, 15), streamID{5, 0}, func(it item) { got = append(got, it.id.ms) })
	want := []uint64{6, 10, 11, 12, 13, 14, 15}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
}
