package redisbroker

// Red-team tests: attacks on the broker's guarantees that the conformance
// suite and the fault tests do not make.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-sse/herald/internal/testredis"
	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/broker/brokertest"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

// pubLog is every successful publish of one topic, per epoch in stream
// order, and the epochs in the order they appeared.
type pubLog struct {
	mu     sync.Mutex
	epochs []string
	ids    map[string][]streamID
}

func newPubLog() *pubLog { return &pubLog{ids: map[string][]streamID{}} }

func (l *pubLog) add(t testing.TB, id string) {
	t.Helper()
	epoch, sid, ok := parseID(id)
	if !ok {
		t.Errorf("Publish returned %q", id)
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, seen := l.ids[epoch]; !seen {
		l.epochs = append(l.epochs, epoch)
	}
	l.ids[epoch] = append(l.ids[epoch], sid)
}

// sorted returns the stream IDs of epoch in log order (publishers may
// record them out of order).
func (l *pubLog) sorted(epoch string) []streamID {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := slices.Clone(l.ids[epoch])
	slices.SortFunc(s, func(a, b streamID) int {
		switch {
		case a.less(b):
			return -1
		case b.less(a):
			return 1
		}
		return 0
	})
	return slices.Compact(s)
}

func (l *pubLog) last() string {
	l.mu.Lock()
	e := l.epochs[len(l.epochs)-1]
	l.mu.Unlock()
	s := l.sorted(e)
	return formatID(e, s[len(s)-1])
}

// checkSegments checks one topic's items against the publish log: the
// items are segments, each an optional KindReset (required for every
// segment but the first), a KindPosition, then events; the events of a
// segment are exactly the log's entries that follow its position in its
// epoch, without gap, duplicate or reordering. complete requires the last
// segment to reach the last published event.
func checkSegments(t testing.TB, topic string, items []*broker.Event, l *pubLog, complete bool) bool {
	t.Helper()
	var segs [][]*broker.Event
	for i, e := range items {
		if i == 0 || e.Kind == broker.KindReset || e.Kind == broker.KindPosition && items[i-1].Kind != broker.KindReset {
			segs = append(segs, nil)
		}
		segs[len(segs)-1] = append(segs[len(segs)-1], e)
	}
	if len(segs) == 0 {
		t.Errorf("topic %q: no item", topic)
		return false
	}
	prevComplete := false // the previous segment reached the end of its epoch's log
	for k, seg := range segs {
		s, err := brokertest.ParseSequence(topic, seg)
		if err != nil {
			t.Errorf("segment %d: %v", k, err)
			return false
		}
		// A new position without a reset is honest only when nothing was
		// missed: the previous segment had every event of its epoch (a
		// live subscriber whose stream was replaced while its
		// subscription never lapsed).
		if k > 0 && s.Reset == nil && !prevComplete {
			t.Errorf("topic %q, segment %d: a new position %q without a reset", topic, k, s.Position.ID)
			return false
		}
		epoch, pos, ok := parseID(s.Position.ID)
		if !ok {
			t.Errorf("topic %q: position %q is not an ID of this broker", topic, s.Position.ID)
			return false
		}
		if isNoEpoch(epoch) && len(s.Events) > 0 {
			// The topic had no epoch yet: the events are the start of the
			// epoch that was created next.
			epoch, _, _ = parseID(s.Events[0].ID)
			pos = streamID{}
		}
		var want []string
		for _, sid := range l.sorted(epoch) {
			if pos.less(sid) {
				want = append(want, formatID(epoch, sid))
			}
		}
		got := s.IDs()
		prevComplete = len(got) == len(want) || len(want) == 0
		if !complete || k < len(segs)-1 {
			if len(got) <= len(want) {
				want = want[:len(got)]
			}
		}
		if !slices.Equal(got, want) {
			n := 0
			for n < min(len(got), len(want)) && got[n] == want[n] {
				n++
			}
			t.Errorf("topic %q, segment %d (reset %v, position %q): %d events, want %d; first difference at %d: got %q, want %q",
				topic, k, s.Reset != nil, s.Position.ID, len(got), len(want), n, got[n:min(n+3, len(got))], want[n:min(n+3, len(want))])
			return false
		}
	}
	return true
}

// A subscription that starts while Redis does not answer starts at a
// time-based position. That position, handed to another replica when
// nothing was published since, must resume exactly: no reset.
func TestRedteamTimeBasedPositionResumes(t *testing.T) {
	r := testredis.Start(t)
	a := newBroker(t, r, Config{Logger: warnLogger()})
	b := newBroker(t, r, Config{Logger: warnLogger()})
	topic := uniqueTopic("timebased")
	publishN(t, a, topic, 3)
	// Older than the clock-skew tolerance: the time-based start excludes
	// them, so nothing in the stream is stamped after the start.
	time.Sleep(clockSkew + 100*time.Millisecond)

	r.Pause(t)
	ra := subscribe(t, a, []string{topic}, nil) // the head read times out
	r.Unpause(t)
	pos := position(t, ra, topic)

	rb := subscribe(t, b, []string{topic}, broker.Cursor{topic: pos})
	position(t, rb, topic)
	id := publishRetry(t, a, topic, broker.Message{Data: "after"})
	waitLast(t, ra, topic, id)
	waitLast(t, rb, topic, id)
	brokertest.CheckSequence(t, topic, ra.Items[topic], brokertest.Want{Position: pos, IDs: []string{id}})
	brokertest.CheckSequence(t, topic, rb.Items[topic], brokertest.Want{Position: pos, IDs: []string{id}})
}

// The stream key vanishes while its epoch key stays (DEL of the stream, or
// eviction under an allkeys-* maxmemory policy). The next XADD starts a new
// stream whose IDs may repeat or precede old ones — in one transaction they
// share the millisecond. No event may be lost silently nor share an ID with
// another.
func TestRedteamStreamLostEpochKept(t *testing.T) {
	r := testredis.Start(t)
	c := r.Client(t)
	b := newBroker(t, r, Config{Logger: warnLogger()})
	topic := uniqueTopic("evicted")
	ids := publishN(t, b, topic, 5)
	live := subscribe(t, b, []string{topic}, nil)
	position(t, live, topic)
	cmds, err := c.TxPipelined(t.Context(), func(p redis.Pipeliner) error {
		p.FCall(t.Context(), "herald_publish", []string{topic}, "", "A")
		p.Del(t.Context(), "herald:{"+topic+"}:s")
		p.FCall(t.Context(), "herald_publish", []string{topic}, "", "B")
		return nil
	})
	if err != nil {
		t.Fatalf("MULTI: %v", err)
	}
	idA, idB := cmds[0].(*redis.Cmd).Val().(string), cmds[2].(*redis.Cmd).Val().(string)
	if idA == idB {
		t.Errorf("two events got the same ID %q", idA)
	}
	idC := publishRetry(t, b, topic, broker.Message{Data: "C"})
	l := newPubLog()
	for _, id := range append(ids, idA, idB, idC) {
		l.add(t, id)
	}
	waitLast(t, live, topic, idC)
	got := map[string]bool{}
	for _, e := range live.Items[topic] {
		got[e.Data] = true
	}
	if !got["A"] || !got["B"] || !got["C"] {
		t.Errorf("live subscriber: got A %v, B %v, C %v; want all", got["A"], got["B"], got["C"])
	}
	checkSegments(t, topic, live.Items[topic], l, true)

	// A subscriber resuming inside the lost stream must be told.
	old := subscribe(t, b, []string{topic}, broker.Cursor{topic: ids[2]})
	waitLast(t, old, topic, idC)
	seq, err := brokertest.ParseSequence(topic, old.Items[topic])
	if err != nil {
		t.Fatal(err)
	}
	if seq.Reset == nil {
		t.Errorf("resuming from %q after its stream was lost: no reset, events %q", ids[2], seq.IDs())
	}
}

// The last local subscriber of a topic leaves and a new one arrives at
// once, again and again, while the UNSUBSCRIBE of the previous round may
// still be in flight: each new subscriber must get every later event.
func TestRedteamResubscribeRace(t *testing.T) {
	r := testredis.Start(t)
	a := newBroker(t, r, Config{Logger: warnLogger()})
	p := newBroker(t, r, Config{Logger: warnLogger()})
	topic := uniqueTopic("flap")
	publishN(t, p, topic, 1)
	for i := range 60 {
		sub, err := a.Subscribe(t.Context(), []string{topic}, nil)
		if err != nil {
			t.Fatal(err)
		}
		rd := brokertest.NewReader(sub)
		pos := position(t, rd, topic)
		id := publishRetry(t, p, topic, broker.Message{Data: fmt.Sprint(i)})
		if !rd.Until(10*time.Second, func(r *brokertest.Reader) bool { return r.LastID(topic) == id }) {
			t.Fatalf("round %d: the event published after the subscription never came: %s", i, rd)
		}
		brokertest.CheckSequence(t, topic, rd.Items[topic], brokertest.Want{Position: pos, IDs: []string{id}})
		sub.Close()
		if i%3 == 0 {
			// Sometimes give the UNSUBSCRIBE a head start.
			time.Sleep(time.Duration(i%7) * time.Millisecond)
		}
	}
}

// Odd but valid topic names (hash-tag braces, glob characters, a name that
// looks like another topic's key suffix) and payloads (1 MiB, NUL,
// invalid UTF-8, blank lines) go through FCALL and pub/sub unchanged and
// stay apart.
func TestRedteamOddTopicsAndPayloads(t *testing.T) {
	r := testredis.Start(t)
	c := r.Client(t)
	b := newBroker(t, r, Config{Logger: warnLogger()})
	base := uniqueTopic("odd")
	topics := []string{base, base + "}:s", "{" + base, base + "}", base + "*?[a]", base + "\"\\%'", base + ":{x}:e", (base + strings.Repeat("~", 256))[:256]}
	payloads := []string{"", "\x00", "a\x00b\n\nc\r\n", "\xff\xfe\xc3(", strings.Repeat("0123456789abcdef", 1<<16), "\n", "tail\r"}
	rd := subscribe(t, b, topics, nil)
	for _, topic := range topics {
		position(t, rd, topic)
	}
	want := map[string][]string{}
	data := map[string]string{}
	for i, topic := range topics {
		for j, d := range payloads {
			var id string
			var err error
			if (i+j)%2 == 0 {
				id, err = b.Publish(t.Context(), topic, broker.Message{Type: "ü-type", Data: d})
			} else {
				id, err = c.FCall(t.Context(), "herald_publish", []string{topic}, "ü-type", d).Text()
			}
			if err != nil {
				t.Fatalf("publish to %q: %v", topic, err)
			}
			want[topic] = append(want[topic], id)
			data[topic+" "+id] = d
		}
	}
	if !rd.Until(waitTimeout, func(r *brokertest.Reader) bool { return r.Total() >= len(topics)*len(payloads) }) {
		t.Fatalf("got %s", rd)
	}
	for _, topic := range topics {
		seq, _ := brokertest.CheckSequence(t, topic, rd.Items[topic], brokertest.Want{IDs: want[topic]})
		for _, e := range seq.Events {
			if e.Data != data[topic+" "+e.ID] || e.Type != "ü-type" {
				t.Errorf("topic %q, event %q: type %q, data %.20q (%d bytes), want %.20q (%d bytes)",
					topic, e.ID, e.Type, e.Data, len(e.Data), data[topic+" "+e.ID], len(data[topic+" "+e.ID]))
			}
		}
		// Replay from the stream returns the same bytes.
		rr := subscribe(t, b, []string{topic}, broker.Cursor{topic: "0-0-0"})
		waitLast(t, rr, topic, want[topic][len(want[topic])-1])
		seq, _ = brokertest.CheckSequence(t, topic, rr.Items[topic], brokertest.Want{IDs: want[topic]})
		for _, e := range seq.Events {
			if e.Data != data[topic+" "+e.ID] {
				t.Errorf("replay of topic %q, event %q: data differs", topic, e.ID)
			}
		}
		rr.Sub.Close()
	}
}

// FCALL from a plain client with wrong arguments fails cleanly, leaves no
// key behind, and the broker carries on.
func TestRedteamFCallArguments(t *testing.T) {
	r := testredis.Start(t)
	c := r.Client(t)
	b := newBroker(t, r, Config{Logger: warnLogger()})
	topic := uniqueTopic("args")
	rd := subscribe(t, b, []string{topic}, nil)
	position(t, rd, topic)
	ctx := t.Context()
	for _, tc := range []struct {
		fn   string
		keys []string
		args []any
	}{
		{"herald_publish", nil, nil},
		{"herald_publish", nil, []any{"t", "d"}},
		{"herald_publish", []string{topic}, nil},
		{"herald_publish", []string{topic}, []any{"t", "d", "key", "extra"}},
		{"herald_publish", []string{topic}, []any{"t", "d", "bad key"}},
		{"herald_publish", []string{topic}, []any{"t", "d", strings.Repeat("k", 129)}},
		{"herald_publish", []string{""}, []any{"t", "d"}},
		{"herald_read", nil, nil},
		{"herald_read", []string{""}, []any{"0-0", "10"}},
	} {
		if err := c.FCall(ctx, tc.fn, tc.keys, tc.args...).Err(); err == nil {
			t.Errorf("FCALL %s %q %q succeeded", tc.fn, tc.keys, tc.args)
		}
	}
	// The subscription gave the topic its epoch and an empty stream
	// (touch); the rejected calls add nothing.
	if n := c.Exists(ctx, "herald:{}:s", "herald:{}:e").Val(); n != 0 {
		t.Errorf("rejected calls created %d keys", n)
	}
	if n := c.XLen(ctx, "herald:{"+topic+"}:s").Val(); n != 0 {
		t.Errorf("rejected calls added %d entries", n)
	}
	// Once the stream exists, a malformed read position is an error.
	if _, err := b.Publish(ctx, topic, broker.Message{Data: "first"}); err != nil {
		t.Fatal(err)
	}
	if err := c.FCall(ctx, "herald_read", []string{topic}, "not-an-id", "10").Err(); err == nil {
		t.Errorf("FCALL herald_read with a malformed position succeeded")
	}
	// The publish function writes: FCALL_RO must refuse it.
	if err := c.FCallRO(ctx, "herald_publish", []string{topic}, "", "x").Err(); err == nil {
		t.Errorf("FCALL_RO herald_publish succeeded")
	}
	id := publishRetry(t, b, topic, broker.Message{Data: "ok"})
	waitLast(t, rd, topic, id)
	if n := rd.Count(topic); n != 2 {
		t.Errorf("%d events, want 2: %s", n, rd)
	}
}

// Subscribers resume from the exact trim boundary (the last event before
// the oldest retained one) while publishers trim the stream under them and
// the pub/sub connections are killed: every subscriber's sequence is the
// log after its position, or an honest reset followed by the log after
// the new position.
func TestRedteamTrimBoundary(t *testing.T) {
	r := testredis.Start(t)
	c := r.Client(t)
	cfg := Config{Prefix: "rt150", HistorySize: 150, QueueLimit: 1 << 20, Logger: warnLogger()}
	a := newBroker(t, r, cfg)
	p := newBroker(t, r, cfg)
	topic := uniqueTopic("trim")
	l := newPubLog()
	for range 400 {
		l.add(t, publishRetry(t, p, topic, broker.Message{Data: "seed"}))
	}
	boundary := func() string {
		first, err := c.XRangeN(t.Context(), "rt150:{"+topic+"}:s", "-", "+", 1).Result()
		if err != nil || len(first) == 0 {
			t.Fatalf("XRANGE: %v %v", first, err)
		}
		epoch := l.epochs[0]
		fid, _ := parseStreamID(first[0].ID)
		var cursor string
		for _, sid := range l.sorted(epoch) {
			if !sid.less(fid) {
				break
			}
			cursor = formatID(epoch, sid)
		}
		return cursor
	}
	// Quiet stream: resuming at the boundary misses nothing. (It may get
	// a conservative truncation reset: Redis does not tell which entry
	// was trimmed last, so a cursor below the first retained entry's
	// predecessor ID — ms-1-max when its seq is 0 — cannot be told apart
	// from one that missed entries.)
	cursor := boundary()
	exact := subscribe(t, p, []string{topic}, broker.Cursor{topic: cursor})
	waitLast(t, exact, topic, l.last())
	seq, err := brokertest.ParseSequence(topic, exact.Items[topic])
	if err != nil {
		t.Fatal(err)
	}
	if got, want := seq.IDs(), logIDs(t, c, "rt150", topic); !slices.Equal(got, want) {
		t.Errorf("resuming at the trim boundary %q: %d events, want the %d retained", cursor, len(got), len(want))
	}
	if seq.Reset != nil {
		t.Logf("resuming at the trim boundary %q: conservative %q reset, position %q", cursor, seq.Reset.Reason, seq.Position.ID)
	}

	var stop sync.WaitGroup
	done := make(chan struct{})
	for k := range 3 {
		stop.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				id, err := []*Broker{a, p}[(k+i)%2].Publish(context.Background(), topic, broker.Message{Data: fmt.Sprint(k, "-", i)})
				if err != nil {
					t.Errorf("Publish: %v", err)
					return
				}
				l.add(t, id)
			}
		})
	}
	var readers []*brokertest.Reader
	for i := range 40 {
		cursor := boundary() // the published ID just before the first retained entry
		if i%10 == 5 {
			c.ClientKillByFilter(t.Context(), "TYPE", "pubsub")
		}
		readers = append(readers, subscribe(t, []*Broker{a, p}[i%2], []string{topic}, broker.Cursor{topic: cursor}))
	}
	close(done)
	stop.Wait()
	if t.Failed() {
		return
	}
	last := l.last()
	drain(t, readers, "every event", func(rd *brokertest.Reader) bool { return rd.LastID(topic) == last })
	resets := 0
	for i, rd := range readers {
		if !checkSegments(t, topic, rd.Items[topic], l, true) {
			t.Fatalf("reader %d", i)
		}
		if rd.Items[topic][0].Kind == broker.KindReset {
			resets++
		}
	}
	t.Logf("%d of %d subscribers got a truncation reset", resets, len(readers))
}

// The stream and epoch are deleted while a subscriber replays a long
// history and publishers run: every subscriber sees, per epoch, the log
// after its position, and a reset at every epoch change.
func TestRedteamEpochChangeMidReplay(t *testing.T) {
	r := testredis.Start(t)
	c := r.Client(t)
	cfg := Config{Prefix: "rtep", HistorySize: 100000, QueueLimit: 1 << 20, Logger: warnLogger()}
	a := newBroker(t, r, cfg)
	p := newBroker(t, r, cfg)
	topic := uniqueTopic("epoch")
	l := newPubLog()
	// A long history: several XRANGE pages per replay.
	pipe := c.Pipeline()
	var cmds []*redis.Cmd
	for i := range 4000 {
		cmds = append(cmds, pipe.FCall(t.Context(), "rtep_publish", []string{topic}, "", fmt.Sprint("seed ", i)))
	}
	if _, err := pipe.Exec(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range cmds {
		l.add(t, cmd.Val().(string))
	}
	first := formatID(l.epochs[0], l.sorted(l.epochs[0])[0])
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			id, err := p.Publish(context.Background(), topic, broker.Message{Data: fmt.Sprint("live ", i)})
			if err != nil {
				t.Errorf("Publish: %v", err)
				return
			}
			l.add(t, id)
		}
	})
	var readers []*brokertest.Reader
	for round := range 3 {
		for i := range 6 {
			readers = append(readers, subscribe(t, []*Broker{a, p}[i%2], []string{topic}, broker.Cursor{topic: first}))
		}
		time.Sleep(time.Duration(5*round) * time.Millisecond)
		if err := c.Del(t.Context(), "rtep:{"+topic+"}:s", "rtep:{"+topic+"}:e").Err(); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(50 * time.Millisecond)
	close(done)
	wg.Wait()
	if t.Failed() {
		return
	}
	last := l.last()
	drain(t, readers, "every event", func(rd *brokertest.Reader) bool { return rd.LastID(topic) == last })
	for i, rd := range readers {
		if !checkSegments(t, topic, rd.Items[topic], l, true) {
			t.Fatalf("reader %d", i)
		}
	}
}

// Events of up to 1 MiB (the server's default body limit) with a history
// of 1000 must not make a replay page a reply of a gigabyte, which never
// arrives within a read timeout and stalls Redis for every replica: pages
// are bounded in bytes, and a replay reads short pages to the end.
func TestRedteamFatEventsReplay(t *testing.T) {
	r := testredis.Start(t)
	c := r.Client(t)
	b := newBroker(t, r, Config{Logger: warnLogger()})
	topic := uniqueTopic("fat")
	data := strings.Repeat("x", 1<<20)
	var ids []string
	for i := range 12 {
		ids = append(ids, publishRetry(t, b, topic, broker.Message{Data: fmt.Sprint(i, data)}))
	}
	v, err := c.FCallRO(t.Context(), "herald_read", []string{topic}, "0-0", "1000").Result()
	if err != nil {
		t.Fatal(err)
	}
	page, err := parseReadResult(v)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(page.entries); n == 0 || n*len(data) > readBytes+len(data) {
		t.Errorf("a page holds %d entries of 1 MiB, want at least one and at most %d bytes", n, readBytes)
	}
	rd := subscribe(t, b, []string{topic}, broker.Cursor{topic: "0-0-0"})
	waitLast(t, rd, topic, ids[len(ids)-1])
	seq, _ := brokertest.CheckSequence(t, topic, rd.Items[topic], brokertest.Want{Position: "0-0-0", IDs: ids})
	for i, e := range seq.Events {
		if e.Data != fmt.Sprint(i, data) {
			t.Errorf("event %d: %d bytes of data differ", i, len(e.Data))
		}
	}
}

// Redis itself drops a pub/sub connection that falls behind
// (client-output-buffer-limit pubsub): a burst of large events must still
// reach every live subscriber, complete and in order, from the stream.
func TestRedteamOutputBufferLimitKill(t *testing.T) {
	r := testredis.Start(t, testredis.WithArgs("--client-output-buffer-limit", "pubsub 256kb 128kb 1"))
	c := r.Client(t)
	b := newBroker(t, r, Config{QueueLimit: 1 << 16, Logger: warnLogger()})
	topics := []string{uniqueTopic("burst1"), uniqueTopic("burst2")}
	var readers []*brokertest.Reader
	for i := range 4 {
		rd := subscribe(t, b, topics[i%2:i%2+1], nil)
		position(t, rd, topics[i%2])
		readers = append(readers, rd)
	}
	l := map[string]*pubLog{topics[0]: newPubLog(), topics[1]: newPubLog()}
	data := strings.Repeat("b", 200<<10)
	for round := range 3 {
		pipe := c.Pipeline()
		var cmds []*redis.Cmd
		var to []string
		for i := range 24 {
			topic := topics[i%2]
			cmds = append(cmds, pipe.FCall(t.Context(), "herald_publish", []string{topic}, "", fmt.Sprint(round, i, data)))
			to = append(to, topic)
		}
		if _, err := pipe.Exec(t.Context()); err != nil {
			t.Fatal(err)
		}
		for i, cmd := range cmds {
			l[to[i]].add(t, cmd.Val().(string))
		}
	}
	drain(t, readers, "every event", func(rd *brokertest.Reader) bool {
		for topic := range rd.Items {
			return rd.LastID(topic) == l[topic].last()
		}
		return false
	})
	for i, rd := range readers {
		for topic, items := range rd.Items {
			if !checkSegments(t, topic, items, l[topic], true) {
				t.Fatalf("reader %d", i)
			}
		}
	}
	t.Logf("%d events refilled from the stream", b.refilled.Load())
}

// Closing a broker while publishers, churning subscribers, replays and
// pub/sub kills run: every call returns, every subscription ends with
// ErrClosed, the other replica carries on, and no goroutine is left.
func TestRedteamCloseUnderLoad(t *testing.T) {
	r := testredis.Start(t)
	c := r.Client(t)
	ignore := goleak.IgnoreCurrent()
	cfg := Config{URL: r.URL() + "?dial_timeout=1s&read_timeout=1s&write_timeout=1s", HistorySize: 5000, QueueLimit: 1 << 20, Logger: warnLogger()}
	a, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	topics := []string{uniqueTopic("cl1"), uniqueTopic("cl2"), uniqueTopic("cl3")}
	for _, topic := range topics {
		publishN(t, p, topic, 200)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var subsMu sync.Mutex
	var subs []broker.Subscription
	for k := range 3 {
		wg.Go(func() { // publishers on both replicas
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				bk := []*Broker{a, p}[(k+i)%2]
				if _, err := bk.Publish(context.Background(), topics[(k+i)%3], broker.Message{Data: "x"}); err != nil && !errors.Is(err, broker.ErrClosed) {
					t.Errorf("Publish: %v", err)
					return
				}
			}
		})
		wg.Go(func() { // churning subscribers on a, some replaying
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				from := broker.Cursor{}
				if i%2 == 0 {
					from[topics[k]] = "0-0-0"
				}
				sub, err := a.Subscribe(context.Background(), topics[:1+(k+i)%3], from)
				if errors.Is(err, broker.ErrClosed) {
					return
				}
				if err != nil {
					t.Errorf("Subscribe: %v", err)
					return
				}
				if i%3 == 0 {
					subsMu.Lock()
					subs = append(subs, sub) // kept open until a closes
					subsMu.Unlock()
				} else {
					brokertest.NewReader(sub).Until(50*time.Millisecond, func(r *brokertest.Reader) bool { return r.Total() > 0 })
					sub.Close()
				}
			}
		})
	}
	for range 3 {
		time.Sleep(100 * time.Millisecond)
		c.ClientKillByFilter(t.Context(), "TYPE", "pubsub")
	}
	done := make(chan error)
	go func() { done <- a.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Close under load did not return")
	}
	close(stop)
	wg.Wait()
	subsMu.Lock()
	for i, sub := range subs {
		rd := brokertest.NewReader(sub)
		if !rd.UntilEnd(waitTimeout) || !errors.Is(rd.Err, broker.ErrClosed) {
			t.Errorf("subscription %d after Close: %s", i, rd)
		}
	}
	subsMu.Unlock()
	// The other replica is unaffected.
	rd := subscribe(t, p, []string{topics[0]}, nil)
	position(t, rd, topics[0])
	id := publishRetry(t, p, topics[0], broker.Message{Data: "after"})
	waitLast(t, rd, topics[0], id)
	rd.Sub.Close()
	if err := p.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	opts := append([]goleak.Option{ignore}, leakOptions...)
	deadline := time.Now().Add(waitTimeout)
	for {
		err := goleak.Find(opts...)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("goroutines left after Close: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A pub/sub gap longer than the queue limit is the broker's lag, not the
// subscribers': refilling it must not disconnect every (fast) subscriber of
// the topic at once as a slow consumer — a reconnection herd right when
// Redis is back. A subscriber that really takes nothing is still cut.
func TestRedteamRefillIsNotSlowness(t *testing.T) {
	r := testredis.Start(t)
	c := r.Client(t)
	b := newBroker(t, r, Config{QueueLimit: 20, Logger: warnLogger()})
	topic := uniqueTopic("herd")
	l := newPubLog()
	l.add(t, publishRetry(t, b, topic, broker.Message{Data: "first"}))
	var rds []*brokertest.Reader
	for range 4 {
		rd := subscribe(t, b, []string{topic}, nil)
		position(t, rd, topic)
		rds = append(rds, rd)
	}
	stuck := subscribe(t, b, []string{topic}, nil) // never takes after this
	position(t, stuck, topic)
	poll(t, "a subscribed pub/sub connection", func() bool {
		ch := "herald:{" + topic + "}"
		return c.PubSubNumSub(t.Context(), ch).Val()[ch] > 0 && b.Connected()
	})
	cmds, err := c.TxPipelined(t.Context(), func(p redis.Pipeliner) error {
		p.ClientKillByFilter(t.Context(), "TYPE", "pubsub")
		for i := range 50 {
			p.FCall(t.Context(), "herald_publish", []string{topic}, "", fmt.Sprint("gap ", i))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, cmd := range cmds[1:] {
		l.add(t, cmd.(*redis.Cmd).Val().(string))
	}
	for i, rd := range rds {
		if !rd.Until(waitTimeout, func(r *brokertest.Reader) bool { return r.LastID(topic) == l.last() }) {
			t.Fatalf("reader %d, taking all the time: %s", i, rd)
		}
		checkSegments(t, topic, rd.Items[topic], l, true)
	}
	if b.refilled.Load() == 0 {
		t.Errorf("the gap was not refilled from the stream")
	}
	// Live events beyond the limit still cut the subscriber that takes
	// nothing.
	for chunk := range 3 {
		for i := range 10 {
			l.add(t, publishRetry(t, b, topic, broker.Message{Data: fmt.Sprint("live ", chunk, i)}))
		}
		for i, rd := range rds {
			if !rd.Until(waitTimeout, func(r *brokertest.Reader) bool { return r.LastID(topic) == l.last() }) {
				t.Fatalf("reader %d: %s", i, rd)
			}
		}
	}
	if !stuck.UntilEnd(waitTimeout) || !errors.Is(stuck.Err, broker.ErrSlowConsumer) {
		t.Errorf("the subscriber that takes nothing: %s, want ErrSlowConsumer", stuck)
	}
}
