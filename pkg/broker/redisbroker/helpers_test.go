package redisbroker

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/broker/brokertest"
	"github.com/redis/go-redis/v9"
)

const waitTimeout = 30 * time.Second

func warnLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func uniqueTopic(tag string) string { return fmt.Sprintf("%s-%x", tag, rand.Uint64()) }

// logIDs returns the full IDs of every entry of topic's stream, in order.
func logIDs(t testing.TB, c *redis.Client, prefix, topic string) []string {
	t.Helper()
	ctx := context.Background()
	base := prefix + ":{" + topic + "}"
	epoch, err := c.Get(ctx, base+":e").Result()
	if err != nil {
		t.Fatalf("epoch of %q: %v", topic, err)
	}
	msgs, err := c.XRange(ctx, base+":s", "-", "+").Result()
	if err != nil {
		t.Fatalf("XRANGE %q: %v", topic, err)
	}
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i] = epoch + "-" + m.ID
	}
	return ids
}

// subscribe subscribes and returns a reader; the subscription is closed at
// cleanup.
func subscribe(t testing.TB, b broker.Broker, topics []string, from broker.Cursor) *brokertest.Reader {
	t.Helper()
	sub, err := b.Subscribe(t.Context(), topics, from)
	if err != nil {
		t.Fatalf("Subscribe(%q, %v): %v", topics, from, err)
	}
	t.Cleanup(func() { sub.Close() })
	return brokertest.NewReader(sub)
}

func position(t testing.TB, r *brokertest.Reader, topic string) string {
	t.Helper()
	if !r.Until(waitTimeout, func(r *brokertest.Reader) bool { return r.HasPosition(topic) }) {
		t.Fatalf("no position for %q: %s", topic, r)
	}
	for _, e := range r.Items[topic] {
		if e.Kind == broker.KindPosition {
			return e.ID
		}
	}
	return ""
}

func waitLast(t testing.TB, r *brokertest.Reader, topic, id string) {
	t.Helper()
	if !r.Until(waitTimeout, func(r *brokertest.Reader) bool { return r.LastID(topic) == id }) {
		t.Fatalf("waiting for %q in %q: %s", id, topic, r)
	}
}

// checkAgainstLog checks that the reader's sequence for topic is exactly
// the log after the reader's position (which must be in the log, or before
// its first entry if it is not).
func checkAgainstLog(t testing.TB, r *brokertest.Reader, topic string, log []string) bool {
	t.Helper()
	seq, err := brokertest.ParseSequence(topic, r.Items[topic])
	if err != nil {
		t.Errorf("%v", err)
		return false
	}
	if seq.Reset != nil {
		t.Errorf("topic %q: unexpected reset %q", topic, seq.Reset.Reason)
		return false
	}
	start := slices.Index(log, seq.Position.ID) + 1
	return brokertest.CheckSequenceOK(t, topic, r.Items[topic], brokertest.Want{Position: seq.Position.ID, IDs: log[start:]})
}

// publisher publishes to topics in a loop until stopped and records what
// succeeded.
type publisher struct {
	mu       sync.Mutex
	ok       []map[string][]string // per publisher, per topic, in return order
	failures []error
	wg       sync.WaitGroup
	stop     chan struct{}
	count    int
}

// startPublishers starts n publishers that publish through the brokers in
// turn until halted, or until each has published limit events (limit > 0).
func startPublishers(b []broker.Broker, topics []string, n, limit int, timeout time.Duration) *publisher {
	p := &publisher{stop: make(chan struct{})}
	for range n {
		p.ok = append(p.ok, map[string][]string{})
	}
	for k := range n {
		p.wg.Go(func() {
			for i := 0; limit <= 0 || i < limit; i++ {
				select {
				case <-p.stop:
					return
				default:
				}
				topic := topics[(k+i)%len(topics)]
				ctx, cancel := context.WithTimeout(context.Background(), timeout)
				id, err := b[(k+i)%len(b)].Publish(ctx, topic, broker.Message{Type: "load", Data: fmt.Sprintf("p%d-%d", k, i)})
				cancel()
				p.mu.Lock()
				if err != nil {
					p.failures = append(p.failures, err)
				} else {
					p.ok[k][topic] = append(p.ok[k][topic], id)
					p.count++
				}
				p.mu.Unlock()
				if err != nil {
					time.Sleep(20 * time.Millisecond) // don't spin while Redis is away
				}
			}
		})
	}
	return p
}

func (p *publisher) succeeded() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.count
}

func (p *publisher) failed() []error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.failures)
}

// inOrder reports whether every successful publish to topic is in log,
// each publisher's in the order its publishes returned.
func (p *publisher) inOrder(topic string, log []string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, per := range p.ok {
		if !isSubsequence(per[topic], log) {
			return false
		}
	}
	return true
}

// waitMore waits until n more publishes succeeded.
func (p *publisher) waitMore(t testing.TB, n int) {
	t.Helper()
	want := p.succeeded() + n
	poll(t, fmt.Sprintf("%d successful publishes", want), func() bool { return p.succeeded() >= want })
}

func (p *publisher) halt() {
	close(p.stop)
	p.wg.Wait()
}

// poll waits for cond with a deadline.
func poll(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Errorf("timed out waiting for %s", what)
			t.FailNow()
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// drain takes from every reader until cond holds for all of them.
func drain(t testing.TB, readers []*brokertest.Reader, what string, cond func(*brokertest.Reader) bool) {
	t.Helper()
	defer func() {
		if t.Failed() {
			n := 0
			for i, r := range readers {
				if !cond(r) && n < 3 {
					n++
					t.Logf("reader %d: %s", i, r)
					for topic, items := range r.Items {
						var kinds []string
						for _, e := range items[max(0, len(items)-3):] {
							kinds = append(kinds, fmt.Sprintf("%d:%s:%s", e.Kind, e.ID, e.Reason))
						}
						t.Logf("  %s: ... %v", topic, kinds)
					}
				}
			}
		}
	}()
	poll(t, what, func() bool {
		all := true
		for _, r := range readers {
			r.Take()
			if !cond(r) {
				all = false
			}
		}
		return all
	})
}

// isSubsequence reports whether every element of sub occurs in seq, in
// the same order.
func isSubsequence(sub, seq []string) bool {
	i := 0
	for _, s := range seq {
		if i < len(sub) && sub[i] == s {
			i++
		}
	}
	return i == len(sub)
}
