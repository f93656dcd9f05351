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
