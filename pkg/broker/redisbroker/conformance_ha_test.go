package redisbroker

import (
	"fmt"
	"testing"

	"github.com/herald-sse/herald/internal/testredis"
	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/broker/brokertest"
)

// haFactory is TestConformance's factory on another topology: cfg (the URL,
// Cluster) plus the suite's options, one prefix per history size as there.
func haFactory(cfg Config) brokertest.Factory {
	return brokertest.Factory{
		New: func(t testing.TB, o brokertest.Options) broker.Broker {
			c := cfg
			c.Prefix = DefaultPrefix
			if o.HistorySize != 0 {
				c.Prefix = fmt.Sprintf("bt%d", o.HistorySize)
			}
			c.HistorySize, c.QueueLimit = o.HistorySize, o.QueueLimit
			c.Logger = warnLogger()
			b, err := New(t.Context(), c)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			t.Cleanup(func() { b.Close() })
			return b
		},
		SharedStorage:    true,
		ApproxTrim:       true,
		IgnoreGoroutines: leakOptions,
	}
}

// checkNew fails the test at once, with one message, if New refuses cfg
// (rather than once per subtest of the suite).
func checkNew(t *testing.T, cfg Config) {
	t.Helper()
	cfg.Logger = warnLogger()
	b, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("New(%s, Cluster: %v): %v", cfg.URL, cfg.Cluster, err)
	}
	b.Close()
}

// TestConformanceSentinel runs the conformance suite against brokers on a
// Sentinel URL (a primary, two replicas, three sentinels): every instance
// finds the primary through the sentinels.
func TestConformanceSentinel(t *testing.T) {
	tp := testredis.StartSentinel(t, 2, 3)
	cfg := Config{URL: tp.URL()}
	checkNew(t, cfg)
	brokertest.Run(t, haFactory(cfg))
}

// TestConformanceCluster runs the conformance suite against brokers on a
// Redis Cluster of three primaries with a replica each; the suite's topics
// spread over the three shards.
func TestConformanceCluster(t *testing.T) {
	c := testredis.StartCluster(t, 3, 1)
	cfg := Config{URL: c.URL(), Cluster: true}
	checkNew(t, cfg)
	brokertest.Run(t, haFactory(cfg))
}
