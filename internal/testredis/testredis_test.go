package testredis

import (
	"context"
	"testing"
	"time"
)

func TestLifecycle(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    []Option
		survive bool
	}{
		{"ephemeral", nil, false},
		{"persistent", []Option{WithPersistence()}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := Start(t, tc.opts...)
			c := r.Client(t)
			ctx := context.Background()
			if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
				t.Fatal(err)
			}
			r.Restart(t)
			got, err := c.Get(ctx, "k").Result()
			if tc.survive && (err != nil || got != "v") {
				t.Fatalf("after restart with persistence: %q, %v", got, err)
			}
			if !tc.survive && err == nil {
				t.Fatalf("after restart without persistence the key is still there: %q", got)
			}

			r.Pause(t)
			pctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			err = c.Ping(pctx).Err()
			cancel()
			if err == nil {
				t.Fatal("PING answered while paused")
			}
			r.Unpause(t)
			if err := c.Ping(ctx).Err(); err != nil {
				t.Fatalf("PING after unpause: %v", err)
			}
		})
	}
}

// TestSentinel: the topology starts with Nodes[0] as the primary, and the
// sentinels fail over when it is killed.
func TestSentinel(t *testing.T) {
	tp := StartSentinel(t, 2, 3)
	p := tp.WaitPrimary(t, nil, 10*time.Second)
	if p != tp.Nodes[0] {
		t.Fatalf("primary %s, want %s", p.Name, tp.Nodes[0].Name)
	}
	start := time.Now()
	p.Kill(t)
	q := tp.WaitPrimary(t, p, 60*time.Second)
	t.Logf("%s killed: %s promoted after %v", p.Name, q.Name, time.Since(start).Round(time.Millisecond))
	p.Start(t)
}

// TestSlot: known values of the CRC16 of Redis Cluster's specification,
// and the hash tag rules (TestCluster compares with CLUSTER KEYSLOT).
func TestSlot(t *testing.T) {
	for _, tc := range []struct {
		key  string
		slot int
	}{
		{"123456789", 0x31C3},
		{"", 0},
		{"foo", 12182},
		{"{foo}.bar", 12182},
		{"x{foo}y{z}", 12182},
		{"{}foo", Slot("{}foo")}, // empty tag: the whole key
		{"{foo", Slot("{foo")},
	} {
		if got := Slot(tc.key); got != tc.slot {
			t.Errorf("Slot(%q) = %d, want %d", tc.key, got, tc.slot)
		}
	}
	if Slot("{}foo") == Slot("foo") || Slot("{foo") == Slot("foo") {
		t.Error("an empty or unclosed tag must hash the whole key")
	}
}
