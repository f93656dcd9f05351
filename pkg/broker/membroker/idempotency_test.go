package membroker

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/herald-sse/herald/pkg/broker"
)

// TestKeyWindow: a key is remembered for the window, not a moment longer;
// expired records are freed; a key used again after its window makes a new
// record that the old one's expiry does not remove.
func TestKeyWindow(t *testing.T) {
	clk := newClock()
	b := New(Config{Now: clk.Now, IdempotencyWindow: time.Minute})
	defer b.Close()
	ctx := context.Background()
	pub := func(data, key string) (string, error) {
		return b.Publish(ctx, "t", broker.Message{Data: data, Key: key})
	}
	id1, _ := pub("x", "k")
	clk.Advance(59 * time.Second)
	if id, _ := pub("x", "k"); id != id1 {
		t.Fatalf("within the window: %q, want %q", id, id1)
	}
	if _, err := pub("other", "k"); !errors.Is(err, broker.ErrKeyConflict) {
		t.Fatalf("conflict within the window: %v", err)
	}
	other, _ := pub("y", "k2") // recorded at 59 s
	clk.Advance(time.Second)
	id2, _ := pub("new content", "k")
	if id2 == id1 || id2 == "" {
		t.Fatalf("after the window: %q, want a new event", id2)
	}
	if id, _ := pub("y", "k2"); id != other {
		t.Fatalf("k2 within its window: %q, want %q", id, other)
	}
	clk.Advance(59 * time.Second) // k2's window ends; k's new record lives on
	if id, _ := pub("new content", "k"); id != id2 {
		t.Fatalf("k's second record: %q, want %q", id, id2)
	}
	if n := b.keys.count(); n != 1 {
		t.Errorf("%d records held, want 1 (k2 expired)", n)
	}
}

// TestKeysBounded: beyond IdempotencyKeys the oldest key is forgotten and
// counted; memory stays bounded.
func TestKeysBounded(t *testing.T) {
	b := New(Config{IdempotencyKeys: 100})
	defer b.Close()
	ctx := context.Background()
	ids := map[int]string{}
	for i := range 250 {
		id, err := b.Publish(ctx, fmt.Sprint("t", i%3), broker.Message{Data: "x", Key: fmt.Sprint("k", i)})
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = id
	}
	if n := b.keys.count(); n != 100 {
		t.Errorf("%d records, want 100", n)
	}
	if got := b.KeysEvicted(); got != 150 {
		t.Errorf("KeysEvicted %d, want 150", got)
	}
	if id, _ := b.Publish(ctx, fmt.Sprint("t", 249%3), broker.Message{Data: "x", Key: "k249"}); id != ids[249] {
		t.Errorf("a recent key was forgotten: %q, want %q", id, ids[249])
	}
	if id, _ := b.Publish(ctx, "t0", broker.Message{Data: "x", Key: "k0"}); id == ids[0] {
		t.Errorf("the oldest key was kept beyond the bound")
	}
	if len(b.keys.fifo)-b.keys.head > 2*100+1 {
		t.Errorf("FIFO holds %d entries for 100 records", len(b.keys.fifo)-b.keys.head)
	}
}

// TestKeysOff: a negative window publishes every keyed message.
func TestKeysOff(t *testing.T) {
	b := New(Config{IdempotencyWindow: -1})
	defer b.Close()
	a, _ := b.Publish(context.Background(), "t", broker.Message{Key: "k"})
	c, _ := b.Publish(context.Background(), "t", broker.Message{Key: "k"})
	if a == c {
		t.Errorf("keys off, yet both publishes returned %q", a)
	}
}
