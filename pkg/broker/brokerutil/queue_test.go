package brokerutil

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/herald-sse/herald/pkg/broker"
)

func ev(i int) *broker.Event {
	return &broker.Event{Kind: broker.KindEvent, Topic: "t", ID: fmt.Sprint(i)}
}

func ids(items []*broker.Event) []string {
	out := make([]string, len(items))
	for i, e := range items {
		out[i] = e.ID
	}
	return out
}

func ready(q *Queue) bool {
	select {
	case <-q.Ready():
		return true
	default:
		return false
	}
}

func TestQueueDefaultLimit(t *testing.T) {
	for _, limit := range []int{0, -1} {
		if q := NewQueue(limit); q.limit != broker.DefaultQueueLimit {
			t.Errorf("NewQueue(%d) has limit %d, want %d", limit, q.limit, broker.DefaultQueueLimit)
		}
	}
}

func TestQueueOverflow(t *testing.T) {
	const limit = 4
	q := NewQueue(limit)
	for i := range limit {
		if !q.Push(ev(i)) {
			t.Fatalf("Push %d of %d refused", i+1, limit)
		}
	}
	if q.Push(ev(limit)) {
		t.Fatal("Push beyond the limit accepted")
	}
	if !q.Ended() {
		t.Error("queue not ended after overflow")
	}
	if q.Push(ev(99)) || q.Preload(ev(99)) {
		t.Error("ended queue accepts items")
	}
	// Pending items first, then the error, then the error again.
	items, err := q.Take(nil)
	if err != nil || fmt.Sprint(ids(items)) != "[0 1 2 3]" {
		t.Fatalf("Take = %v, %v; want the 4 pending items", ids(items), err)
	}
	if !ready(q) {
		t.Error("no wake-up for the pending error after taking the items")
	}
	for range 2 {
		if items, err := q.Take(nil); !errors.Is(err, broker.ErrSlowConsumer) || len(items) != 0 {
			t.Errorf("Take = %v, %v; want broker.ErrSlowConsumer", ids(items), err)
		}
	}
}

func TestQueueTakeResetsLimit(t *testing.T) {
	q := NewQueue(2)
	for round := range 5 {
		q.Push(ev(2 * round))
		q.Push(ev(2*round + 1))
		items, err := q.Take(nil)
		if err != nil || len(items) != 2 {
			t.Fatalf("round %d: Take = %v, %v", round, ids(items), err)
		}
	}
}

func TestQueuePreloadNotCounted(t *testing.T) {
	const limit, replay = 3, 50
	q := NewQueue(limit)
	batch := make([]*broker.Event, replay)
	for i := range batch {
		batch[i] = ev(i)
	}
	if !q.Preload(batch...) {
		t.Fatal("Preload refused")
	}
	for i := range limit {
		if !q.Push(ev(replay + i)) {
			t.Fatalf("live Push %d after a preload refused", i)
		}
	}
	if q.Push(ev(999)) {
		t.Error("live Push beyond the limit accepted after a preload")
	}
	items, _ := q.Take(nil)
	if len(items) != replay+limit {
		t.Errorf("took %d items, want %d", len(items), replay+limit)
	}
	for i, e := range items {
		if e.ID != fmt.Sprint(i) {
			t.Fatalf("item %d is %q: order lost", i, e.ID)
		}
	}
}

// TestQueueReleasesBigBuffer checks that a replay-sized buffer is not kept
// for the life of the subscription.
func TestQueueReleasesBigBuffer(t *testing.T) {
	q := NewQueue(4)
	batch := make([]*broker.Event, 1000)
	for i := range batch {
		batch[i] = ev(i)
	}
	q.Preload(batch...)
	q.Take(nil)
	if c := cap(q.items); c > 64 {
		t.Errorf("queue keeps a buffer of %d after taking a replay", c)
	}
}

func TestQueueFail(t *testing.T) {
	q := NewQueue(0)
	q.Push(ev(1))
	first := errors.New("first")
	q.Fail(first)
	q.Fail(errors.New("second"))
	if q.Push(ev(2)) {
		t.Error("Push after Fail accepted")
	}
	if !ready(q) {
		t.Error("Fail did not wake the consumer")
	}
	items, err := q.Take(nil)
	if err != nil || len(items) != 1 {
		t.Fatalf("Take = %v, %v; want the pending item first", ids(items), err)
	}
	if _, err := q.Take(nil); err != first {
		t.Errorf("Take returned %v, want the first error", err)
	}
}

// TestQueueFailNil checks that a queue ended without a reason still
// reports an end: a nil error would look like "nothing pending" forever.
func TestQueueFailNil(t *testing.T) {
	q := NewQueue(0)
	q.Fail(nil)
	if _, err := q.Take(nil); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("Take after Fail(nil) = %v, want broker.ErrClosed", err)
	}
}

func TestQueueTakeAppends(t *testing.T) {
	q := NewQueue(0)
	q.Push(ev(2))
	dst := []*broker.Event{ev(1)}
	items, err := q.Take(dst)
	if err != nil || fmt.Sprint(ids(items)) != "[1 2]" {
		t.Errorf("Take(dst) = %v, %v; want dst with the item appended", ids(items), err)
	}
	if items, err := q.Take(nil); err != nil || len(items) != 0 {
		t.Errorf("Take of an empty live queue = %v, %v", ids(items), err)
	}
}

// TestQueueConcurrent pushes from one goroutine while another takes, under
// -race: nothing is lost or reordered while the consumer keeps up.
func TestQueueConcurrent(t *testing.T) {
	const n = 20000
	q := NewQueue(n) // big enough that a slow scheduler cannot overflow it
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range n {
			if !q.Push(ev(i)) {
				t.Errorf("Push %d refused", i)
				return
			}
		}
		q.Fail(broker.ErrClosed)
	})
	var got []*broker.Event
	deadline := time.After(30 * time.Second)
	for {
		var err error
		got, err = q.Take(got)
		if err != nil {
			if !errors.Is(err, broker.ErrClosed) {
				t.Errorf("Take: %v", err)
			}
			break
		}
		select {
		case <-q.Ready():
		case <-deadline:
			t.Fatalf("consumer stuck after %d items", len(got))
		}
	}
	wg.Wait()
	if len(got) != n {
		t.Fatalf("took %d items, want %d", len(got), n)
	}
	for i, e := range got {
		if e.ID != fmt.Sprint(i) {
			t.Fatalf("item %d is %q", i, e.ID)
		}
	}
}

func TestEventMemo(t *testing.T) {
	e := ev(1)
	calls := 0
	build := func(e *broker.Event) []byte { calls++; return []byte("id: " + e.ID) }
	a, b := e.Memo(build), e.Memo(build)
	if string(a) != "id: 1" || string(b) != "id: 1" || calls != 1 {
		t.Errorf("Memo = %q, %q after %d builds; want one build", a, b, calls)
	}
}

func TestQueueRefill(t *testing.T) {
	ev := func(n int) []*broker.Event {
		out := make([]*broker.Event, n)
		for i := range out {
			out[i] = &broker.Event{ID: fmt.Sprint(i)}
		}
		return out
	}
	t.Run("keeping up: unlimited like a replay", func(t *testing.T) {
		q := NewQueue(4)
		if !q.Refill(ev(10)...) {
			t.Fatal("refill of an empty queue refused")
		}
		got, err := q.Take(nil)
		if len(got) != 10 || err != nil {
			t.Fatalf("took %d, %v", len(got), err)
		}
		// The limit is back to 4 afterwards.
		for i := 0; i < 4; i++ {
			if !q.Push(&broker.Event{}) {
				t.Fatalf("push %d refused", i)
			}
		}
		if q.Push(&broker.Event{}) {
			t.Fatal("fifth push accepted over a limit of 4")
		}
	})
	t.Run("behind: counted", func(t *testing.T) {
		q := NewQueue(4)
		q.Push(&broker.Event{})
		if q.Refill(ev(4)...) {
			t.Fatal("refill past the limit of a queue that is behind accepted")
		}
		got, _ := q.Take(nil)
		if _, err := q.Take(nil); len(got) != 1 || !errors.Is(err, broker.ErrSlowConsumer) {
			t.Fatalf("took %d, then %v; want 1 and broker.ErrSlowConsumer", len(got), err)
		}
		q2 := NewQueue(4)
		q2.Push(&broker.Event{})
		if !q2.Refill(ev(3)...) {
			t.Fatal("refill within the limit refused")
		}
	})
	t.Run("ended", func(t *testing.T) {
		q := NewQueue(4)
		q.Fail(broker.ErrClosed)
		if q.Refill(ev(1)...) {
			t.Fatal("refill of an ended queue accepted")
		}
	})
}

// The Ready channel is made on first use: a wake-up before it (a push
// while nobody asked for Ready yet) must still be waiting on it, also when
// the push and the first Ready race.
func TestQueueReadyMadeLate(t *testing.T) {
	q := NewQueue(4)
	q.Push(ev(1))
	select {
	case <-q.Ready():
	default:
		t.Fatal("a push before the first Ready left no wake-up on it")
	}
	for i := range 2000 {
		q := NewQueue(4)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			q.Push(ev(i))
		}()
		ch := q.Ready()
		wg.Wait()
		if items, _ := q.Take(nil); len(items) != 1 {
			t.Fatalf("round %d: took %d items", i, len(items))
		}
		select {
		case <-ch:
		default:
			t.Fatalf("round %d: the push's wake-up was lost", i)
		}
		if q.Ready() != ch {
			t.Fatalf("round %d: Ready changed its channel", i)
		}
	}
}
