package membroker

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/herald-sse/herald/pkg/broker"
)

func TestDirectory(t *testing.T) {
	b := New(Config{HistorySize: 10})
	ctx := context.Background()
	if err := b.Announce(ctx, "a", []byte("A"), time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := b.Announce(ctx, "b", []byte("B"), time.Millisecond); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	recs, err := b.Nodes(ctx)
	if err != nil || len(recs) != 1 || string(recs[0]) != "A" {
		t.Fatalf("after b expired: %q %v", recs, err)
	}
	if err := b.Announce(ctx, "a", []byte("A2"), time.Hour); err != nil {
		t.Fatal(err)
	}
	if recs, _ = b.Nodes(ctx); len(recs) != 1 || string(recs[0]) != "A2" {
		t.Fatalf("after a's second record: %q", recs)
	}
	if err := b.Withdraw(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if recs, _ = b.Nodes(ctx); len(recs) != 0 {
		t.Fatalf("after withdraw: %q", recs)
	}
	b.Close()
	if _, err := b.Nodes(ctx); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("Nodes after Close: %v", err)
	}
}

func TestTopicInfo(t *testing.T) {
	b := New(Config{HistorySize: 2})
	defer b.Close()
	ctx := context.Background()
	info, err := b.TopicInfo(ctx, "t")
	if err != nil || info.Length != 0 || info.FirstID != "" || info.LastID == "" || info.Epoch != b.Epoch() {
		t.Fatalf("unused topic: %+v %v", info, err)
	}
	sub, err := b.Subscribe(ctx, []string{"t"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	var ids []string
	for _, d := range []string{"1", "2", "3"} {
		id, err := b.Publish(ctx, "t", broker.Message{Data: d})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	info, err = b.TopicInfo(ctx, "t")
	if err != nil || info.Length != 2 || info.FirstID != ids[1] || info.LastID != ids[2] {
		t.Fatalf("after 3 publishes with history 2: %+v %v (ids %v)", info, err, ids)
	}
	counts := map[string]int{}
	b.LocalTopics(func(topic string, n int) bool { counts[topic] = n; return true })
	if len(counts) != 1 || counts["t"] != 1 {
		t.Errorf("LocalTopics: %v", counts)
	}
	if _, err := b.TopicInfo(ctx, "bad topic"); !errors.Is(err, broker.ErrInvalidTopic) {
		t.Errorf("invalid topic: %v", err)
	}
}
