package membroker

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/broker/brokertest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is a fake Config.Now.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

const timeout = 10 * time.Second

func newBroker(t testing.TB, cfg Config) *Broker {
	b := New(cfg)
	t.Cleanup(func() { b.Close() })
	return b
}

func publish(t testing.TB, b *Broker, topic string, data string) string {
	t.Helper()
	id, err := b.Publish(t.Context(), topic, broker.Message{Data: data})
	if err != nil {
		t.Fatalf("Publish: %v", err)
	}
	return id
}

// resume subscribes topic from cursor and returns its items once the
// position and n events arrived.
func resume(t testing.TB, b *Broker, topic, cursor string, n int) []*broker.Event {
	t.Helper()
	sub, err := b.Subscribe(t.Context(), []string{topic}, broker.Cursor{topic: cursor})
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	defer sub.Close()
	r := brokertest.NewReader(sub)
	if !r.Until(timeout, func(r *brokertest.Reader) bool { return r.HasPosition(topic) && r.Count(topic) >= n }) {
		t.Fatalf("resume from %q: %s", cursor, r)
	}
	return r.Items[topic]
}

func TestIDs(t *testing.T) {
	b1, b2 := newBroker(t, Config{}), newBroker(t, Config{})
	if b1.Epoch() == b2.Epoch() {
		t.Fatalf("two brokers share the epoch %q", b1.Epoch())
	}
	for _, b := range []*Broker{b1, b2} {
		if len(b.Epoch()) != 8 || strings.Trim(b.Epoch(), "0123456789abcdef") != "" {
			t.Errorf("epoch %q: want 8 lowercase hex digits", b.Epoch())
		}
	}
	for i := 1; i <= 3; i++ {
		if id, want := publish(t, b1, "ids", ""), fmt.Sprintf("%s-%s-%d", b1.Epoch(), topicTag("ids"), i); id != want {
			t.Errorf("event %d has ID %q, want %q", i, id, want)
		}
	}
	// The position before the first event of a topic is "<epoch>-<tag>-0".
	items := resume(t, b1, "fresh", "", 0)
	brokertest.CheckSequence(t, "fresh", items, brokertest.Want{Position: b1.Epoch() + "-" + topicTag("fresh") + "-0"})
	// The tag is 8 hex digits of the name's SHA-1 (echo -n ids | sha1sum).
	if got := topicTag("ids"); got != "3adc09b3" {
		t.Errorf("topicTag(ids) = %q", got)
	}
}

func TestParseID(t *testing.T) {
	for _, c := range []struct {
		id         string
		epoch, tag string
		seq        uint64
		ok         bool
	}{
		{"0123abcd-89abcdef-0", "0123abcd", "89abcdef", 0, true},
		{"0123abcd-89abcdef-18446744073709551615", "0123abcd", "89abcdef", 1<<64 - 1, true},
		{"0123abcd-89abcdef-18446744073709551616", "", "", 0, false},
		{"0123abcd-89abcdef-007", "", "", 0, false},
		{"0123ABCD-89abcdef-1", "", "", 0, false},
		{"0123abcd-89abcdeF-1", "", "", 0, false},
		{"0123abcd-89abcdef-", "", "", 0, false},
		{"0123abcd-89abcdef-+1", "", "", 0, false},
		{"0123abc-89abcdef-1", "", "", 0, false},
		{"0123abcd-89abcdef_1", "", "", 0, false},
		{"0123abcd-1", "", "", 0, false}, // the format before topic tags
		{"?", "", "", 0, false},
		{"", "", "", 0, false},
		{"garbage-but-printable", "", "", 0, false},
	} {
		epoch, tag, seq, ok := parseID(c.id)
		if epoch != c.epoch || tag != c.tag || seq != c.seq || ok != c.ok {
			t.Errorf("parseID(%q) = %q, %q, %d, %v; want %q, %q, %d, %v", c.id, epoch, tag, seq, ok, c.epoch, c.tag, c.seq, c.ok)
		}
	}
}

func FuzzParseID(f *testing.F) {
	for _, s := range []string{"0123abcd-89abcdef-0", "0123abcd-89abcdef-42", "?", "x-1", "0123abcd-89abcdef-007", "0123abcd-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		epoch, tag, seq, ok := parseID(s)
		if !ok {
			return
		}
		// A parsed ID is canonical: rendering it gives it back, and it is a
		// valid ID for the sse layer.
		tp := &topicLog{prefix: epoch + "-" + tag + "-"}
		if got := tp.id(seq); got != s {
			t.Errorf("parseID(%q) = %q, %d: renders as %q", s, epoch, seq, got)
		}
		if !brokertest.ValidID(s) {
			t.Errorf("parseID accepted %q, which is not a valid ID", s)
		}
	})
}

func TestHistoryTTL(t *testing.T) {
	c := newClock()
	b := newBroker(t, Config{HistoryTTL: time.Minute, Now: c.Now})
	e1 := publish(t, b, "ttl", "1")
	c.Advance(30 * time.Second)
	e2 := publish(t, b, "ttl", "2")
	c.Advance(30 * time.Second) // e1 is exactly 60 s old: still kept
	items := resume(t, b, "ttl", "?", 2)
	brokertest.CheckSequence(t, "ttl", items, brokertest.Want{Reset: []broker.ResetReason{broker.ReasonUnknown}, IDs: []string{e1, e2}})

	c.Advance(time.Nanosecond) // e1 is older than the TTL: checked on subscribe
	for _, tc := range []struct {
		cursor string
		want   brokertest.Want
	}{
		{"?", brokertest.Want{Reset: []broker.ResetReason{broker.ReasonUnknown}, Position: e1, IDs: []string{e2}}},
		{b.Epoch() + "-" + topicTag("ttl") + "-0", brokertest.Want{Reset: []broker.ResetReason{broker.ReasonTruncated}, Position: e1, IDs: []string{e2}}},
		{e1, brokertest.Want{Position: e1, IDs: []string{e2}}}, // nothing missed
		{e2, brokertest.Want{Position: e2}},
	} {
		items := resume(t, b, "ttl", tc.cursor, len(tc.want.IDs))
		brokertest.CheckSequence(t, "ttl", items, tc.want)
	}

	// Publishing expires too; the Time of events comes from Config.Now.
	c.Advance(time.Minute)
	e3 := publish(t, b, "ttl", "3")
	items = resume(t, b, "ttl", e1, 1)
	seq, _ := brokertest.CheckSequence(t, "ttl", items, brokertest.Want{Reset: []broker.ResetReason{broker.ReasonTruncated}, Position: e2, IDs: []string{e3}})
	if len(seq.Events) == 1 && !seq.Events[0].Time.Equal(c.Now()) {
		t.Errorf("event Time %v, want the fake clock's %v", seq.Events[0].Time, c.Now())
	}
	b.topics["ttl"].mu.Lock()
	if n := b.topics["ttl"].n; n != 1 {
		t.Errorf("%d events retained, want 1", n)
	}
	b.topics["ttl"].mu.Unlock()
}

// TestDropIdleTopics checks which topics are freed and what cursors of a
// dropped topic get afterwards.
func TestDropIdleTopics(t *testing.T) {
	c := newClock()
	b := newBroker(t, Config{HistoryTTL: time.Minute, Now: c.Now})

	// A topic only subscribed to is freed when its last subscriber leaves.
	ctx, cancel := context.WithCancel(t.Context())
	s1, err := b.Subscribe(ctx, []string{"watched"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := b.Subscribe(t.Context(), []string{"watched"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s1.Close()
	if n := b.topicCount(); n != 1 {
		t.Errorf("%d topics with one subscriber left, want 1", n)
	}
	s2.Close()
	cancel()
	if n := b.topicCount(); n != 0 {
		t.Errorf("%d topics after the last subscriber left, want 0", n)
	}

	// A topic with retained events is kept; once they expired, the sweep
	// frees it.
	var ids []string
	for i := range 3 {
		ids = append(ids, publish(t, b, "news", fmt.Sprint(i)))
	}
	publish(t, b, "other", "x")
	b.sweep()
	if n := b.topicCount(); n != 2 {
		t.Fatalf("%d topics before expiry, want 2", n)
	}
	c.Advance(time.Minute + time.Second)
	b.sweep()
	if n := b.topicCount(); n != 0 {
		t.Fatalf("%d topics after expiry, want 0", n)
	}

	// The topic comes back counting from the highest dropped head, so old
	// cursors are never ahead and never silently skip new events.
	n1 := publish(t, b, "news", "new 1")
	n2 := publish(t, b, "news", "new 2")
	if want := fmt.Sprintf("%s-%s-%d", b.Epoch(), topicTag("news"), 4); n1 != want {
		t.Errorf("first event after the drop has ID %q, want %q", n1, want)
	}
	for _, tc := range []struct {
		cursor string
		want   brokertest.Want
	}{
		// The events after ids[0] expired: truncated.
		{ids[0], brokertest.Want{Reset: []broker.ResetReason{broker.ReasonTruncated}, Position: ids[2], IDs: []string{n1, n2}}},
		// At the old head: nothing was missed.
		{ids[2], brokertest.Want{Position: ids[2], IDs: []string{n1, n2}}},
		{b.Epoch() + "-" + topicTag("news") + "-99", brokertest.Want{Reset: []broker.ResetReason{broker.ReasonUnknown}, Position: ids[2], IDs: []string{n1, n2}}},
	} {
		items := resume(t, b, "news", tc.cursor, 2)
		brokertest.CheckSequence(t, "news", items, tc.want)
	}
}

// TestSweeper checks that the sweeping goroutine runs and stops with Close
// (TestMain checks for leaks).
func TestSweeper(t *testing.T) {
	b := New(Config{HistoryTTL: time.Millisecond})
	defer b.Close()
	publish(t, b, "short-lived", "x")
	deadline := time.Now().Add(timeout)
	for b.topicCount() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the sweeper did not drop the expired topic")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestNoHistory(t *testing.T) {
	b := newBroker(t, Config{HistorySize: -1})
	e1 := publish(t, b, "none", "1")
	e2 := publish(t, b, "none", "2")
	items := resume(t, b, "none", e1, 0)
	brokertest.CheckSequence(t, "none", items, brokertest.Want{Reset: []broker.ResetReason{broker.ReasonTruncated}, Position: e2})
	items = resume(t, b, "none", e2, 0)
	brokertest.CheckSequence(t, "none", items, brokertest.Want{Position: e2})
}

// TestBoundedHistory checks that a topic's memory stays within HistorySize
// and that the ring keeps the newest events in order as it wraps.
func TestBoundedHistory(t *testing.T) {
	const size = 100
	b := newBroker(t, Config{HistorySize: size})
	var ids []string
	for i := range 1000 {
		ids = append(ids, publish(t, b, "bounded", fmt.Sprint(i)))
		if i == 4 {
			top := b.topics["bounded"]
			top.mu.Lock()
			if len(top.ring) > 8 {
				t.Errorf("a topic with 5 events holds a ring of %d", len(top.ring))
			}
			top.mu.Unlock()
		}
	}
	top := b.topics["bounded"]
	top.mu.Lock()
	if len(top.ring) != size || top.n != size {
		t.Errorf("ring of %d holding %d events, want %d", len(top.ring), top.n, size)
	}
	top.mu.Unlock()
	items := resume(t, b, "bounded", ids[899], size)
	brokertest.CheckSequence(t, "bounded", items, brokertest.Want{Position: ids[899], IDs: ids[900:]})
	items = resume(t, b, "bounded", ids[950], 49)
	brokertest.CheckSequence(t, "bounded", items, brokertest.Want{Position: ids[950], IDs: ids[951:]})
}

// TestSlowConsumerRemoved checks that a subscriber ended by overflow no
// longer costs the topic anything.
func TestSlowConsumerRemoved(t *testing.T) {
	b := newBroker(t, Config{QueueLimit: 4})
	sub, err := b.Subscribe(t.Context(), []string{"slow"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	for i := range 10 {
		publish(t, b, "slow", fmt.Sprint(i))
	}
	top := b.topics["slow"]
	top.mu.Lock()
	n := len(top.subs)
	top.mu.Unlock()
	if n != 0 {
		t.Errorf("%d subscribers left on the topic, want 0", n)
	}
	r := brokertest.NewReader(sub)
	if !r.UntilEnd(timeout) || r.Err != broker.ErrSlowConsumer || r.Count("slow") != 4 {
		t.Errorf("want 4 events then ErrSlowConsumer, got %s", r)
	}
}

// TestFanOutAllocations checks that fan-out allocates per event, not per
// subscriber: the *Event is shared.
func TestFanOutAllocations(t *testing.T) {
	b := newBroker(t, Config{})
	subs := make([]broker.Subscription, 100)
	for i := range subs {
		s, err := b.Subscribe(t.Context(), []string{"fan"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		subs[i] = s
	}
	buf := make([]*broker.Event, 0, 16)
	drain := func() {
		for _, s := range subs {
			items, err := s.Take(buf[:0])
			if err != nil {
				t.Fatal(err)
			}
			clear(items)
		}
	}
	msg := broker.Message{Data: "x"}
	for range 10 { // grow every queue's buffer
		b.Publish(t.Context(), "fan", msg)
	}
	drain()
	allocs := testing.AllocsPerRun(100, func() {
		b.Publish(t.Context(), "fan", msg)
		drain()
	})
	// The Event and its ID; growing the ring now and then.
	if allocs > 3 {
		t.Errorf("%.1f allocations per publish to 100 subscribers, want at most 3", allocs)
	}
}

func TestCloseIdempotent(t *testing.T) {
	b := New(Config{})
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func BenchmarkPublish(b *testing.B) {
	for _, n := range []int{0, 1, 1000, 10000} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) {
			const drainEvery = 512
			br := New(Config{QueueLimit: 2 * drainEvery})
			defer br.Close()
			subs := make([]broker.Subscription, n)
			for i := range subs {
				s, err := br.Subscribe(context.Background(), []string{"bench"}, nil)
				if err != nil {
					b.Fatal(err)
				}
				subs[i] = s
			}
			buf := make([]*broker.Event, 0, 2*drainEvery)
			drain := func() {
				for _, s := range subs {
					items, err := s.Take(buf[:0])
					if err != nil {
						b.Fatal(err)
					}
					clear(items)
				}
			}
			ctx := context.Background()
			msg := broker.Message{Type: "tick", Data: `{"price": 42}`}
			for range drainEvery { // grow the queues' buffers before measuring
				if _, err := br.Publish(ctx, "bench", msg); err != nil {
					b.Fatal(err)
				}
			}
			drain()
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if _, err := br.Publish(ctx, "bench", msg); err != nil {
					b.Fatal(err)
				}
				if i%drainEvery == drainEvery-1 {
					b.StopTimer()
					drain()
					b.StartTimer()
				}
			}
			b.StopTimer()
			if n > 0 {
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/delivery")
			}
			for _, s := range subs {
				s.Close()
			}
		})
	}
}

func BenchmarkSubscribeReplay(b *testing.B) {
	const n = 1000
	br := New(Config{HistorySize: n})
	defer br.Close()
	ctx := context.Background()
	for i := range n {
		if _, err := br.Publish(ctx, "bench", broker.Message{Data: fmt.Sprint(i)}); err != nil {
			b.Fatal(err)
		}
	}
	from := broker.Cursor{"bench": br.Epoch() + "-" + topicTag("bench") + "-0"}
	buf := make([]*broker.Event, 0, n+1)
	b.ReportAllocs()
	for b.Loop() {
		s, err := br.Subscribe(ctx, []string{"bench"}, from)
		if err != nil {
			b.Fatal(err)
		}
		items, err := s.Take(buf[:0])
		if err != nil || len(items) != n+1 {
			b.Fatalf("took %d items, %v", len(items), err)
		}
		clear(items)
		s.Close()
	}
}

// topicCount returns the number of topics held.
func (b *Broker) topicCount() int {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return len(b.topics)
}
