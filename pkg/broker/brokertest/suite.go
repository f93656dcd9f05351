package brokertest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/herald-sse/herald/pkg/broker"
	"go.uber.org/goleak"
)

type suite struct{ f Factory }

// topicName returns a fresh topic name, unique across runs sharing storage.
func topicName(tag string) string {
	return fmt.Sprintf("bt-%016x-%s", rand.Uint64(), tag)
}

// rec is what the suite knows about one published event.
type rec struct {
	msg           broker.Message
	before, after time.Time
}

// plog records published events to check payloads and times of deliveries.
type plog struct {
	mu   sync.Mutex
	recs map[[2]string]rec // {topic, id}
}

func newLog() *plog { return &plog{recs: map[[2]string]rec{}} }

// publish publishes msg and records it. From the test goroutine only
// (it calls t.Fatalf).
func (s *suite) publish(t testing.TB, l *plog, b broker.Broker, topic string, msg broker.Message) string {
	t.Helper()
	id, err := s.tryPublish(t, l, b, topic, msg)
	if err != nil {
		t.Fatalf("Publish(%q): %v", topic, err)
	}
	return id
}

// tryPublish publishes msg within the suite's timeout, checks the ID's
// format and records it. Safe for concurrent use.
func (s *suite) tryPublish(t testing.TB, l *plog, b broker.Broker, topic string, msg broker.Message) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.f.Timeout)
	defer cancel()
	before := time.Now()
	id, err := b.Publish(ctx, topic, msg)
	after := time.Now()
	if err != nil {
		return "", err
	}
	if !ValidID(id) {
		return id, fmt.Errorf("Publish(%q) returned ID %q: want 1-%d bytes of [0-9A-Za-z_-]", topic, id, MaxIDLen)
	}
	if l != nil {
		l.mu.Lock()
		l.recs[[2]string{topic, id}] = rec{msg: msg, before: before, after: after}
		l.mu.Unlock()
	}
	return id, nil
}

// publishN publishes n messages sequentially and returns their IDs.
func (s *suite) publishN(t testing.TB, l *plog, b broker.Broker, topic string, n int, tag string) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = s.publish(t, l, b, topic, broker.Message{Type: "t-" + tag, Data: fmt.Sprintf("%s %d", tag, i)})
	}
	return ids
}

// check compares the payload, topic and time of every event of seq with
// what was published.
func (l *plog) check(t testing.TB, seq Sequence) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	bad := 0
	for _, e := range seq.Events {
		r, ok := l.recs[[2]string{seq.Topic, e.ID}]
		switch {
		case !ok:
			t.Errorf("topic %q: event %q was never returned by Publish", seq.Topic, e.ID)
		case e.Type != r.msg.Type || e.Data != r.msg.Data:
			t.Errorf("topic %q: event %q is {Type %q, Data %.60q}, published {Type %q, Data %.60q}",
				seq.Topic, e.ID, e.Type, e.Data, r.msg.Type, r.msg.Data)
		case e.Time.IsZero():
			t.Errorf("topic %q: event %q has a zero Time", seq.Topic, e.ID)
		case e.Time.Before(r.before.Add(-5*time.Second)) || e.Time.After(r.after.Add(5*time.Second)):
			t.Errorf("topic %q: event %q has Time %v, published between %v and %v", seq.Topic, e.ID, e.Time, r.before, r.after)
		default:
			continue
		}
		if bad++; bad >= 5 {
			return
		}
	}
}

// subscribe subscribes with the test's context and returns a Reader.
func (s *suite) subscribe(t testing.TB, b broker.Broker, topics []string, from broker.Cursor) *Reader {
	t.Helper()
	return s.subscribeCtx(t, t.Context(), b, topics, from)
}

func (s *suite) subscribeCtx(t testing.TB, ctx context.Context, b broker.Broker, topics []string, from broker.Cursor) *Reader {
	t.Helper()
	sub, err := b.Subscribe(ctx, topics, from)
	if err != nil {
		t.Fatalf("Subscribe(%q, %v): %v", topics, from, err)
	}
	t.Cleanup(func() { sub.Close() })
	return NewReader(sub)
}

// until waits for cond on r and fails the test if it does not hold in time.
func (s *suite) until(t testing.TB, r *Reader, what string, cond func(*Reader) bool) {
	t.Helper()
	if !r.Until(s.f.Timeout, cond) {
		t.Fatalf("waiting for %s: got %s", what, r)
	}
}

// waitEvents waits until topic has at least n events.
func (s *suite) waitEvents(t testing.TB, r *Reader, topic string, n int) {
	t.Helper()
	s.until(t, r, fmt.Sprintf("%d events of %q", n, topic), func(r *Reader) bool { return r.Count(topic) >= n })
}

// waitPosition waits until topic's position arrived and returns it.
func (s *suite) waitPosition(t testing.TB, r *Reader, topic string) string {
	t.Helper()
	s.until(t, r, fmt.Sprintf("the position of %q", topic), func(r *Reader) bool { return r.HasPosition(topic) })
	for _, e := range r.Items[topic] {
		if e.Kind == broker.KindPosition {
			return e.ID
		}
	}
	return ""
}

// waitLast waits until the last item of topic has ID id.
func (s *suite) waitLast(t testing.TB, r *Reader, topic, id string) {
	t.Helper()
	s.until(t, r, fmt.Sprintf("%q in %q", id, topic), func(r *Reader) bool { return r.LastID(topic) == id })
}

// verifyNoLeaks fails t if goroutines other than those ignored by opts
// still run once the suite's timeout has passed.
func (s *suite) verifyNoLeaks(t testing.TB, opts ...goleak.Option) {
	t.Helper()
	opts = append(opts, s.f.IgnoreGoroutines...)
	deadline := time.Now().Add(s.f.Timeout)
	for {
		err := goleak.Find(opts...)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("goroutines leaked: %v", err)
			return
		}
	}
}

// checkOrder checks that got holds every ID of every publisher exactly once
// and each publisher's IDs in the order Publish returned them.
func checkOrder(t testing.TB, topic string, got []string, per [][]string) bool {
	t.Helper()
	index := make(map[string]int, len(got))
	for i, id := range got {
		index[id] = i
	}
	total := 0
	for p, ids := range per {
		total += len(ids)
		last := -1
		for _, id := range ids {
			i, ok := index[id]
			if !ok {
				t.Errorf("topic %q: publisher %d's event %q is missing", topic, p, id)
				return false
			}
			if i <= last {
				t.Errorf("topic %q: publisher %d's event %q arrived out of its publish order", topic, p, id)
				return false
			}
			last = i
		}
	}
	if len(got) != total {
		t.Errorf("topic %q: %d events delivered, %d published", topic, len(got), total)
		return false
	}
	return true
}
