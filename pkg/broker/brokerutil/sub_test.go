package brokerutil

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/herald-sse/herald/pkg/broker"
)

func TestSubEndsOnceAndReleases(t *testing.T) {
	var released atomic.Int32
	s := NewSub(4, func() { released.Add(1) })
	ctx, cancel := context.WithCancel(context.Background())
	s.EndWhenDone(ctx)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() { defer wg.Done(); _ = s.Close() }()
	}
	cancel()
	s.End(broker.ErrSlowConsumer)
	wg.Wait()
	if n := released.Load(); n != 1 {
		t.Fatalf("released %d times, want 1", n)
	}
	if _, err := s.Take(nil); err == nil {
		t.Fatal("Take after the end returned no error")
	}
	if s.Push(&broker.Event{}) {
		t.Fatal("Push after the end accepted")
	}
}

func TestSubContextEndsIt(t *testing.T) {
	released := make(chan struct{})
	s := NewSub(4, func() { close(released) })
	ctx, cancel := context.WithCancel(context.Background())
	s.EndWhenDone(ctx)
	s.Push(&broker.Event{ID: "1"})
	cancel()
	<-released
	got, err := s.Take(nil)
	if len(got) != 1 || err != nil {
		t.Fatalf("pending items first: got %d, %v", len(got), err)
	}
	if _, err := s.Take(nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("then %v, want context.Canceled", err)
	}
}

func TestSubEndedBeforeWatch(t *testing.T) {
	s := NewSub(4, nil)
	s.End(broker.ErrClosed)
	ctx, cancel := context.WithCancel(context.Background())
	s.EndWhenDone(ctx) // must not leave an AfterFunc registered
	cancel()
	if _, err := s.Take(nil); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("err %v, want broker.ErrClosed (the first end wins)", err)
	}
}
