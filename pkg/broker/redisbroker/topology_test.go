package redisbroker

import (
	"errors"
	"strings"
	"testing"

	"github.com/herald-sse/herald/internal/testredis"
	"github.com/herald-sse/herald/pkg/broker"
)

// TestTopologyAtStart: New asks the servers what they are, and a URL of
// the wrong form for them fails it with an error that says what to change;
// a right one works.
func TestTopologyAtStart(t *testing.T) {
	plain := testredis.Start(t)
	node := testredis.Start(t, testredis.WithArgs("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"))
	tp := testredis.StartSentinel(t, 0, 1)
	s := tp.Sentinels[0].Addr
	for _, tc := range []struct {
		name    string
		cfg     Config
		want    error  // nil: New succeeds
		mention string // the message must contain it
	}{
		{"standalone URL at a sentinel", Config{URL: "redis://" + s}, ErrTopology, "master_name"},
		{"standalone URL at a cluster node", Config{URL: node.URL()}, ErrTopology, "Cluster"},
		{"cluster URL at a standalone server", Config{URL: plain.URL(), Cluster: true}, ErrTopology, "not a Redis Cluster node"},
		{"cluster URL at a cluster node", Config{URL: "redis://" + node.Addr, Cluster: true}, nil, ""},
		{"sentinel URL at a standalone server", Config{URL: "redis://" + plain.Addr + "?master_name=" + testredis.MasterName}, ErrTopology, "not a Redis Sentinel"},
		{"sentinel URL with an unknown master", Config{URL: "redis://" + s + "?master_name=nosuch"}, ErrTopology, `"nosuch"`},
		{"several addrs without master_name", Config{URL: "redis://" + s + "?addr=" + plain.Addr}, ErrTopology, "master_name"},
		{"sentinel URL", Config{URL: tp.URL()}, nil, ""},
		{"standalone URL", Config{URL: plain.URL()}, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Logger = warnLogger()
			b, err := New(t.Context(), tc.cfg)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				defer b.Close()
				if tc.cfg.Cluster {
					return // a node without slots: New starts, publishes wait for slots
				}
				if _, err := b.Publish(t.Context(), uniqueTopic("topo"), broker.Message{Data: "x"}); err != nil {
					t.Fatalf("Publish: %v", err)
				}
				return
			}
			if err == nil {
				b.Close()
				t.Fatalf("New succeeded, want %v", tc.want)
			}
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.mention) {
				t.Fatalf("New: %v; want %v mentioning %q", err, tc.want, tc.mention)
			}
			t.Logf("New: %v", err)
		})
	}
}
