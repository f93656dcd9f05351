package brokertest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-sse/herald/pkg/broker"
)

// testIdempotency: a key makes a retry return the first publish's ID and
// append nothing (on another instance too, with shared storage); the same
// key with other content is a conflict; keys of different topics, and
// publishes without a key, are independent.
func (s *suite) testIdempotency(t *testing.T) {
	b := s.f.New(t, Options{})
	b2 := b
	if s.f.SharedStorage {
		b2 = s.f.New(t, Options{})
	}
	l := newLog()
	a, c := topicName("key-a"), topicName("key-c")
	r := s.subscribe(t, b, []string{a, c}, nil)
	s.waitPosition(t, r, a)
	s.waitPosition(t, r, c)

	first := broker.Message{Type: "x", Data: "one", Key: "k1"}
	id1 := s.publish(t, l, b, a, first)
	for i, inst := range []broker.Broker{b, b2, b} {
		if id := s.publish(t, nil, inst, a, first); id != id1 {
			t.Fatalf("retry %d with key k1 returned %q, the first publish %q", i, id, id1)
		}
	}
	id2 := s.publish(t, l, b2, a, broker.Message{Type: "x", Data: "two", Key: "k2"})
	if id2 == id1 {
		t.Fatalf("another key returned the same ID %q", id1)
	}
	for _, m := range []broker.Message{
		{Type: "x", Data: "other", Key: "k1"},
		{Type: "y", Data: "one", Key: "k1"},
		{Data: "one", Key: "k1"},
	} {
		if _, err := s.tryPublish(t, nil, b2, a, m); !errors.Is(err, broker.ErrKeyConflict) {
			t.Errorf("Publish(%+v) after k1 was used for %+v: %v, want ErrKeyConflict", m, first, err)
		} else if !strings.Contains(err.Error(), "k1") {
			t.Errorf("conflict error %q does not name the key", err)
		}
	}
	idc := s.publish(t, l, b, c, first) // same key, other topic: another event
	plain := []string{
		s.publish(t, l, b, a, broker.Message{Type: "x", Data: "one"}),
		s.publish(t, l, b, a, broker.Message{Type: "x", Data: "one"}),
	}
	for _, k := range []string{"has space", "tab\t", "é", "nul\x00", strings.Repeat("k", broker.MaxKeyLen+1)} {
		if _, err := b.Publish(t.Context(), a, broker.Message{Data: "bad", Key: k}); !errors.Is(err, broker.ErrInvalidMessage) {
			t.Errorf("Publish with key %.40q: %v, want ErrInvalidMessage", k, err)
		}
	}
	longest := strings.Repeat("!~", broker.MaxKeyLen)[:broker.MaxKeyLen]
	idl := s.publish(t, l, b, a, broker.Message{Data: "longest key", Key: longest})
	if id := s.publish(t, nil, b2, a, broker.Message{Data: "longest key", Key: longest}); id != idl {
		t.Errorf("retry with the longest key returned %q, first %q", id, idl)
	}

	want := append([]string{id1, id2}, append(plain, idl)...)
	s.waitLast(t, r, a, idl)
	s.waitLast(t, r, c, idc)
	seq, _ := CheckSequence(t, a, r.Items[a], Want{IDs: want})
	l.check(t, seq)
	CheckSequence(t, c, r.Items[c], Want{IDs: []string{idc}})
	// A replay holds the same: the retries appended nothing.
	r2 := s.subscribe(t, b2, []string{a}, nil)
	s.waitPosition(t, r2, a)
	r3 := s.subscribe(t, b2, []string{a}, broker.Cursor{a: r.Items[a][0].ID})
	s.waitLast(t, r3, a, idl)
	CheckSequence(t, a, r3.Items[a], Want{IDs: want})
}

// testBatch: PublishBatch answers one result per event in order, invalid
// events fail alone, and events keep their batch order per topic, also
// with concurrent batches and single publishes.
func (s *suite) testBatch(t *testing.T) {
	b := s.f.New(t, Options{})
	l := newLog()
	a, c := topicName("batch-a"), topicName("batch-c")
	r := s.subscribe(t, b, []string{a, c}, nil)
	s.waitPosition(t, r, a)
	s.waitPosition(t, r, c)
	ctx, cancel := context.WithTimeout(context.Background(), s.f.Timeout)
	defer cancel()

	batch := []broker.Publication{
		{Topic: a, Message: broker.Message{Data: "a0"}},
		{Topic: c, Message: broker.Message{Type: "t", Data: "c0"}},
		{Topic: "bad topic", Message: broker.Message{Data: "x"}},
		{Topic: a, Message: broker.Message{Type: "herald.no", Data: "x"}},
		{Topic: a, Message: broker.Message{Data: "a1", Key: "ka"}},
		{Topic: a, Message: broker.Message{Data: "a1", Key: "ka"}}, // the same key again: the same ID
		{Topic: a, Message: broker.Message{Data: "a1-other", Key: "ka"}},
		{Topic: c, Message: broker.Message{Data: "c1", Key: "bad key"}},
		{Topic: a, Message: broker.Message{Data: "a2\nline two"}},
		{Topic: c, Message: broker.Message{Data: "c2"}},
	}
	t0 := time.Now()
	res := broker.PublishBatch(ctx, b, batch)
	t1 := time.Now()
	if len(res) != len(batch) {
		t.Fatalf("PublishBatch returned %d results for %d events", len(res), len(batch))
	}
	wantErr := map[int]error{2: broker.ErrInvalidTopic, 3: broker.ErrInvalidMessage, 6: broker.ErrKeyConflict, 7: broker.ErrInvalidMessage}
	var ida, idc []string
	for i, rr := range res {
		if w := wantErr[i]; w != nil {
			if !errors.Is(rr.Err, w) || rr.ID != "" {
				t.Errorf("event %d: result {%q, %v}, want error %v", i, rr.ID, rr.Err, w)
			}
			continue
		}
		if rr.Err != nil || !ValidID(rr.ID) {
			t.Fatalf("event %d: result {%q, %v}, want an ID", i, rr.ID, rr.Err)
		}
		l.mu.Lock()
		l.recs[[2]string{batch[i].Topic, rr.ID}] = rec{msg: batch[i].Message, before: t0, after: t1}
		l.mu.Unlock()
		if i == 5 {
			if rr.ID != res[4].ID {
				t.Errorf("event 5 (key ka again) got %q, event 4 %q", rr.ID, res[4].ID)
			}
			continue
		}
		if batch[i].Topic == a {
			ida = append(ida, rr.ID)
		} else {
			idc = append(idc, rr.ID)
		}
	}
	s.waitLast(t, r, a, ida[len(ida)-1])
	s.waitLast(t, r, c, idc[len(idc)-1])
	seq, _ := CheckSequence(t, a, r.Items[a], Want{IDs: ida})
	l.check(t, seq)
	seq, _ = CheckSequence(t, c, r.Items[c], Want{IDs: idc})
	l.check(t, seq)
	if res := broker.PublishBatch(ctx, b, nil); len(res) != 0 {
		t.Errorf("an empty batch returned %d results", len(res))
	}

	// Concurrent batches and single publishes: every event once, each
	// batch's events in batch order within their topic.
	const workers, rounds, size = 4, 15, 10
	topics := []string{topicName("cb-a"), topicName("cb-b")}
	rc := s.subscribe(t, b, topics, nil)
	for _, tp := range topics {
		s.waitPosition(t, rc, tp)
	}
	var mu sync.Mutex
	var orders [][]string // per batch and topic: IDs in batch order
	total := 0
	var wg sync.WaitGroup
	errs := make(chan error, workers*rounds*size)
	for w := range workers {
		wg.Go(func() {
			for k := range rounds {
				batch := make([]broker.Publication, size)
				for i := range batch {
					batch[i] = broker.Publication{Topic: topics[(i+w)%2], Message: broker.Message{Data: fmt.Sprintf("%d-%d-%d", w, k, i)}}
				}
				if w == 0 { // and a single publish between batches
					if _, err := b.Publish(ctx, topics[k%2], broker.Message{Data: "single"}); err != nil {
						errs <- err
					} else {
						mu.Lock()
						total++
						mu.Unlock()
					}
				}
				res := broker.PublishBatch(ctx, b, batch)
				per := map[string][]string{}
				for i, rr := range res {
					if rr.Err != nil {
						errs <- fmt.Errorf("batch %d/%d event %d: %w", w, k, i, rr.Err)
						continue
					}
					per[batch[i].Topic] = append(per[batch[i].Topic], rr.ID)
				}
				mu.Lock()
				for _, ids := range per {
					orders = append(orders, ids)
					total += len(ids)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	s.until(t, rc, fmt.Sprintf("%d events", total), func(r *Reader) bool { return r.Total() >= total })
	pos := map[string]int{}
	for _, tp := range topics {
		seq, err := ParseSequence(tp, rc.Items[tp])
		if err != nil {
			t.Fatal(err)
		}
		for i, id := range seq.IDs() {
			if _, dup := pos[id]; dup {
				t.Fatalf("event %q delivered twice", id)
			}
			pos[id] = i
		}
	}
	if len(pos) != total {
		t.Errorf("%d events delivered, %d published", len(pos), total)
	}
	for _, ids := range orders {
		for i := 1; i < len(ids); i++ {
			if pos[ids[i]] <= pos[ids[i-1]] {
				t.Fatalf("batch order broken: %q delivered before %q", ids[i], ids[i-1])
			}
		}
	}
}
