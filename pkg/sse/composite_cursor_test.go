package sse

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/broker/brokerutil"
)

// scriptBroker hands each subscription to the test, which decides what the
// subscription delivers and when: the contract lets a broker deliver one
// topic's items before another topic's KindPosition.
type scriptBroker struct {
	subs chan *scriptSub
}

func (b *scriptBroker) Publish(context.Context, string, broker.Message) (string, error) {
	return "", errors.New("scriptBroker: no publish")
}

func (b *scriptBroker) Subscribe(ctx context.Context, topics []string, from broker.Cursor) (broker.Subscription, error) {
	s := &scriptSub{Queue: brokerutil.NewQueue(0), from: from}
	b.subs <- s
	return s, nil
}

func (b *scriptBroker) Close() error { return nil }

type scriptSub struct {
	*brokerutil.Queue
	from  broker.Cursor
	taken atomic.Int32
}

func (s *scriptSub) Take(dst []*broker.Event) ([]*broker.Event, error) {
	n := len(dst)
	dst, err := s.Queue.Take(dst)
	s.taken.Add(int32(len(dst) - n))
	return dst, err
}

func (s *scriptSub) Close() error { s.Fail(broker.ErrClosed); return nil }

func (s *scriptSub) waitTaken(t *testing.T, n int32) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for s.taken.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("the handler took %d items, want %d", s.taken.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// A multi-topic stream must never send a composite cursor that loses a
// topic's position: an event of topic a that arrives before topic b's
// KindPosition must carry b's position from the client's own cursor (resume),
// and must not go out with an empty place for b (live start), which a resume
// would read as "b: start live" — a silent gap in b.
func TestCompositeCursorBeforeEveryPosition(t *testing.T) {
	eachMode(t, func(t *testing.T, m mode) {
		b := &scriptBroker{subs: make(chan *scriptSub, 1)}
		h := &TopicHandler{Broker: b, Heartbeat: -1, Logger: discardLogger()}
		m.set(h)
		srv := httptest.NewServer(h)
		defer srv.Close()
		ev := func(kind broker.Kind, topic, id string) *broker.Event {
			return &broker.Event{Kind: kind, Topic: topic, ID: id, Data: "x"}
		}

		t.Run("resume", func(t *testing.T) {
			resp := get(t, nil, srv.URL+"/events?topic=a&topic=b", "Last-Event-ID", FormatCursor(broker.Cursor{"a": "a-1", "b": "b-1"}))
			defer resp.Body.Close()
			er := newEventReader(t, resp.Body)
			s := <-b.subs
			if s.from["a"] != "a-1" || s.from["b"] != "b-1" {
				t.Fatalf("broker got cursor %v", s.from)
			}
			s.Preload(ev(broker.KindPosition, "a", "a-1"))
			s.Push(ev(broker.KindEvent, "a", "a-2"))
			got := er.next(wait)
			if want := FormatCursor(broker.Cursor{"a": "a-2", "b": "b-1"}); got.ID != want {
				t.Errorf("first event's id %q, want %q: b's position must survive", got.ID, want)
			}
		})

		t.Run("live", func(t *testing.T) {
			resp := get(t, nil, srv.URL+"/events?topic=a&topic=b")
			defer resp.Body.Close()
			er := newEventReader(t, resp.Body)
			s := <-b.subs
			s.Preload(ev(broker.KindPosition, "a", "a-0"))
			s.Push(ev(broker.KindEvent, "a", "a-1"))
			s.waitTaken(t, 2)
			s.Push(ev(broker.KindPosition, "b", "b-0"))
			got := er.next(wait)
			for _, part := range strings.Split(got.ID, ".") {
				if part == "" || strings.HasSuffix(part, ":") {
					t.Fatalf("event with id %q: a topic's place is empty; resuming from it starts that topic live and skips its events", got.ID)
				}
			}
		})
	})
}
