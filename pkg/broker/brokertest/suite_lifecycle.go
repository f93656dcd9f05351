package brokertest

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"testing"

	"github.com/herald-sse/herald/pkg/broker"
	"go.uber.org/goleak"
)

func (s *suite) testSlowConsumer(t *testing.T) {
	const limit, n = 16, 200
	b := s.f.New(t, Options{QueueLimit: limit})
	l := newLog()
	topic := topicName("slow")
	fast := s.subscribe(t, b, []string{topic}, nil)
	slow := s.subscribe(t, b, []string{topic}, nil)
	pos := s.waitPosition(t, fast, topic)
	var ids []string
	for i := range n {
		// tryPublish bounds each publish by the timeout: a publisher
		// blocked by the slow subscriber fails here.
		id, err := s.tryPublish(t, l, b, topic, broker.Message{Data: fmt.Sprint(i)})
		if err != nil {
			t.Fatalf("publish %d with a stalled subscriber: %v", i, err)
		}
		ids = append(ids, id)
		// The fast subscriber keeps up: it takes each event before the next.
		s.waitEvents(t, fast, topic, i+1)
	}
	seq, _ := CheckSequence(t, topic, fast.Items[topic], Want{Position: pos, IDs: ids})
	l.check(t, seq)

	// The slow subscriber (which took nothing so far) gets what was queued,
	// a prefix of the log, then ErrSlowConsumer.
	if !slow.UntilEnd(s.f.Timeout) {
		t.Fatalf("the slow subscriber did not end: %s", slow)
	}
	if !errors.Is(slow.Err, broker.ErrSlowConsumer) {
		t.Errorf("slow subscriber ended with %v, want ErrSlowConsumer", slow.Err)
	}
	got := slow.Count(topic)
	if got > limit {
		t.Errorf("slow subscriber received %d events, more than QueueLimit %d", got, limit)
	}
	CheckSequence(t, topic, slow.Items[topic], Want{Position: pos, IDs: ids[:min(got, len(ids))]})

	// The broker goes on delivering to the others.
	more := s.publishN(t, l, b, topic, 5, "more")
	s.waitLast(t, fast, topic, more[4])
	CheckSequence(t, topic, fast.Items[topic], Want{Position: pos, IDs: append(ids, more...)})
}

func (s *suite) testCloseAndCancel(t *testing.T) {
	b := s.f.New(t, Options{})
	topic := topicName("close")
	ids := s.publishN(t, nil, b, topic, 3, "close")
	from := broker.Cursor{topic: ids[0]}
	want := Want{Position: ids[0], IDs: ids[1:]}

	t.Run("cancel", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		r := s.subscribeCtx(t, ctx, b, []string{topic}, from)
		cancel()
		if !r.UntilEnd(s.f.Timeout) {
			t.Fatalf("the subscription did not end after its ctx was cancelled: %s", r)
		}
		if !errors.Is(r.Err, context.Canceled) {
			t.Errorf("Take returned %v, want context.Canceled", r.Err)
		}
		// Pending items are delivered before the error.
		CheckSequence(t, topic, r.Items[topic], want)
		if _, err := r.Sub.Take(nil); !errors.Is(err, context.Canceled) {
			t.Errorf("Take after the end returned %v, want context.Canceled again", err)
		}
	})

	t.Run("close", func(t *testing.T) {
		r := s.subscribe(t, b, []string{topic}, from)
		if err := r.Sub.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if !r.UntilEnd(s.f.Timeout) {
			t.Fatalf("the subscription did not end after Close: %s", r)
		}
		if !errors.Is(r.Err, broker.ErrClosed) {
			t.Errorf("Take returned %v, want ErrClosed", r.Err)
		}
		if err := r.Sub.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		if _, err := r.Sub.Take(nil); !errors.Is(err, broker.ErrClosed) {
			t.Errorf("Take after the end returned %v, want ErrClosed again", err)
		}
	})

	// Close and cancel wake a consumer blocked on Ready.
	for _, how := range []string{"close while waiting", "cancel while waiting"} {
		t.Run(how, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			r := s.subscribeCtx(t, ctx, b, []string{topic}, nil)
			s.waitPosition(t, r, topic)
			done := make(chan bool)
			go func() { done <- r.UntilEnd(s.f.Timeout) }()
			if how == "close while waiting" {
				r.Sub.Close()
			} else {
				cancel()
			}
			if !<-done {
				t.Fatalf("the waiting consumer was not woken: %s", r)
			}
			wantErr := broker.ErrClosed
			if how != "close while waiting" {
				wantErr = context.Canceled
			}
			if !errors.Is(r.Err, wantErr) {
				t.Errorf("Take returned %v, want %v", r.Err, wantErr)
			}
		})
	}

	t.Run("cancelled before Subscribe", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		sub, err := b.Subscribe(ctx, []string{topic}, nil)
		if err != nil {
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Subscribe with a cancelled ctx: %v, want context.Canceled", err)
			}
			return
		}
		defer sub.Close()
		r := NewReader(sub)
		if !r.UntilEnd(s.f.Timeout) || !errors.Is(r.Err, context.Canceled) {
			t.Errorf("a subscription with a cancelled ctx must end with context.Canceled: %s", r)
		}
	})
}

// testSubscriptionsLeakNothing checks that subscriptions released by Close
// or cancel leave no goroutine behind, and that a subscription does not
// cost a goroutine of its own.
func (s *suite) testSubscriptionsLeakNothing(t *testing.T) {
	const topics, subs = 5, 100
	b := s.f.New(t, Options{})
	// Warm up, so that goroutines a broker starts once are running.
	warm := topicName("warm")
	rw := s.subscribe(t, b, []string{warm}, nil)
	s.waitPosition(t, rw, warm)
	s.publish(t, nil, b, warm, broker.Message{})
	s.waitEvents(t, rw, warm, 1)
	rw.Sub.Close()
	rw.UntilEnd(s.f.Timeout)
	ignore := goleak.IgnoreCurrent()
	before := runtime.NumGoroutine()

	names := make([]string, topics)
	for i := range names {
		names[i] = topicName(fmt.Sprint("leak", i))
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	readers := make([]*Reader, subs)
	for i := range readers {
		c := t.Context()
		if i%2 == 0 {
			c = ctx
		}
		readers[i] = s.subscribeCtx(t, c, b, []string{names[i%topics]}, nil)
	}
	for i, r := range readers {
		s.waitPosition(t, r, names[i%topics])
	}
	for _, topic := range names {
		s.publish(t, nil, b, topic, broker.Message{})
	}
	for i, r := range readers {
		s.waitEvents(t, r, names[i%topics], 1)
	}
	if grown := runtime.NumGoroutine() - before; grown >= subs {
		t.Errorf("%d live subscriptions on %d topics added %d goroutines: want no goroutine per subscription (use context.AfterFunc)", subs, topics, grown)
	}
	cancel()
	for i, r := range readers {
		if i%2 == 1 {
			r.Sub.Close()
		}
	}
	for i, r := range readers {
		if !r.UntilEnd(s.f.Timeout) {
			t.Fatalf("subscription %d did not end: %s", i, r)
		}
	}
	s.verifyNoLeaks(t, ignore)
}

func (s *suite) testBrokerClose(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	b := s.f.New(t, Options{})
	topic := topicName("bclose")
	ids := s.publishN(t, nil, b, topic, 3, "bclose")
	rLive := s.subscribe(t, b, []string{topic}, nil)
	rReplay := s.subscribe(t, b, []string{topic}, broker.Cursor{topic: ids[0]})
	rWait := s.subscribe(t, b, []string{topic}, nil)
	s.waitPosition(t, rWait, topic)
	done := make(chan bool)
	go func() { done <- rWait.UntilEnd(s.f.Timeout) }()

	if err := b.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if !<-done {
		t.Errorf("a consumer waiting on Ready was not woken by Broker.Close: %s", rWait)
	}
	for name, r := range map[string]*Reader{"live": rLive, "replay": rReplay, "waiting": rWait} {
		if !r.UntilEnd(s.f.Timeout) {
			t.Errorf("%s subscription did not end after Broker.Close: %s", name, r)
		} else if !errors.Is(r.Err, broker.ErrClosed) {
			t.Errorf("%s subscription ended with %v, want ErrClosed", name, r.Err)
		}
	}
	CheckSequence(t, topic, rReplay.Items[topic], Want{Position: ids[0], IDs: ids[1:]})

	ctx, cancel := context.WithTimeout(t.Context(), s.f.Timeout)
	defer cancel()
	if _, err := b.Publish(ctx, topic, broker.Message{}); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("Publish after Close: %v, want ErrClosed", err)
	}
	if sub, err := b.Subscribe(ctx, []string{topic}, nil); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("Subscribe after Close: %v, want ErrClosed", err)
		if sub != nil {
			sub.Close()
		}
	}
	s.verifyNoLeaks(t, ignore)
}
