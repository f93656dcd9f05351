package brokertest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-sse/herald/pkg/broker"
)

// testManySubscribers runs 200 subscribers (each replaying from the start
// while the publishers run) and 8 publishers on two topics.
func (s *suite) testManySubscribers(t *testing.T) {
	const subs, publishers, each = 200, 8, 25
	b := s.f.New(t, Options{HistorySize: 10000})
	topics := []string{topicName("many1"), topicName("many2")}
	perTopic := publishers / len(topics) * each
	ref := s.subscribe(t, b, topics, nil)
	from := broker.Cursor{}
	for _, topic := range topics {
		from[topic] = s.waitPosition(t, ref, topic)
	}

	start := make(chan struct{})
	var wg sync.WaitGroup
	per := make([][]string, publishers)
	for p := range publishers {
		wg.Go(func() {
			<-start
			topic := topics[p%len(topics)]
			for i := range each {
				id, err := s.tryPublish(t, nil, b, topic, broker.Message{Data: fmt.Sprintf("p%d-%d", p, i)})
				if err != nil {
					t.Errorf("publisher %d: %v", p, err)
					return
				}
				per[p] = append(per[p], id)
			}
		})
	}
	readers := make([]*Reader, subs)
	for i := range readers {
		wg.Go(func() {
			<-start
			sub, err := b.Subscribe(t.Context(), topics, from)
			if err != nil {
				t.Errorf("subscriber %d: %v", i, err)
				return
			}
			defer sub.Close()
			r := NewReader(sub)
			if !r.Until(s.f.Timeout, func(r *Reader) bool { return r.Total() >= 2*perTopic }) {
				t.Errorf("subscriber %d: %s", i, r)
			}
			readers[i] = r
		})
	}
	close(start)
	wg.Wait()
	if t.Failed() {
		return
	}
	s.until(t, ref, "every event", func(r *Reader) bool { return r.Total() >= 2*perTopic })
	for k, topic := range topics {
		seq, err := ParseSequence(topic, ref.Items[topic])
		if err != nil {
			t.Fatal(err)
		}
		var mine [][]string
		for p := k; p < publishers; p += len(topics) {
			mine = append(mine, per[p])
		}
		if !checkOrder(t, topic, seq.IDs(), mine) {
			return
		}
		bad := 0
		for i, r := range readers {
			if !CheckSequenceOK(t, topic, r.Items[topic], Want{Position: from[topic], IDs: seq.IDs()}) {
				t.Errorf("subscriber %d differs from the reference", i)
				if bad++; bad >= 3 {
					return
				}
			}
		}
	}
}

// testCloseRace closes subscriptions and then the broker while publishers
// and subscribers churn: every call returns or fails with ErrClosed, nothing
// deadlocks, and every subscription ends (run it with -race).
func (s *suite) testCloseRace(t *testing.T) {
	// The long-lived subscribers take nothing until the end: a queue limit
	// far above what the publishers manage keeps them from overflowing.
	b := s.f.New(t, Options{QueueLimit: 1 << 22})
	topics := []string{topicName("race1"), topicName("race2"), topicName("race3")}
	var published atomic.Int64
	var wg sync.WaitGroup
	for p := range 2 {
		wg.Go(func() {
			for i := 0; ; i++ {
				_, err := s.tryPublish(t, nil, b, topics[(p+i)%len(topics)], broker.Message{Data: fmt.Sprint(i)})
				if errors.Is(err, broker.ErrClosed) {
					return
				}
				if err != nil {
					t.Errorf("Publish: %v", err)
					return
				}
				published.Add(1)
			}
		})
	}
	var churned atomic.Int64
	for k := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				ctx, cancel := context.WithCancel(context.Background())
				from := broker.Cursor{topics[0]: []string{"", "?"}[i%2]}
				sub, err := b.Subscribe(ctx, topics[:1+(k+i)%len(topics)], from)
				if err != nil {
					cancel()
					if !errors.Is(err, broker.ErrClosed) {
						t.Errorf("Subscribe: %v", err)
					}
					return
				}
				r := NewReader(sub)
				r.Until(s.f.Timeout, func(r *Reader) bool { return r.Ended || r.Total() > 0 })
				if i%2 == 0 {
					sub.Close()
				} else {
					cancel()
				}
				if !r.UntilEnd(s.f.Timeout) {
					t.Errorf("a churned subscription did not end: %s", r)
				} else if !errors.Is(r.Err, broker.ErrClosed) && !errors.Is(r.Err, context.Canceled) {
					t.Errorf("a churned subscription ended with %v", r.Err)
				}
				cancel()
				churned.Add(1)
			}
		})
	}
	var long []*Reader
	for range 10 {
		long = append(long, s.subscribe(t, b, topics, nil))
	}
	// Let everybody make progress, then close the broker under them.
	deadline := time.Now().Add(s.f.Timeout)
	for published.Load() < 200 || churned.Load() < 20 {
		if time.Now().After(deadline) {
			t.Errorf("no progress: %d published, %d subscriptions churned", published.Load(), churned.Load())
			break
		}
		time.Sleep(time.Millisecond)
	}
	if err := b.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(s.f.Timeout):
		t.Fatal("publishers or subscribers still running after Broker.Close")
	}
	for i, r := range long {
		if !r.UntilEnd(s.f.Timeout) || !errors.Is(r.Err, broker.ErrClosed) {
			t.Errorf("subscription %d: want ErrClosed after Broker.Close, got %s", i, r)
			continue
		}
		for _, topic := range topics {
			if _, err := ParseSequence(topic, r.Items[topic]); err != nil && len(r.Items[topic]) > 0 {
				t.Errorf("subscription %d: %v", i, err)
			}
		}
	}
}
