package redisbroker

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/herald-sse/herald/internal/testredis"
	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/broker/brokertest"
)

// modelChecks is the number of model checks against Redis unless
// -rapid.checks is given: each check costs Redis round trips and
// connections, so fewer than rapid's default 100.
const modelChecks = 20

// TestModel runs brokertest's model-based test on Redis: two replicas
// sharing the storage, publishing and subscribing at random, with cursors
// of every kind. A restart is a fresh key prefix: the storage of the
// earlier incarnation is gone, as after a Redis restart without
// persistence (every earlier instance is closed first, so no live
// subscriber sees the loss: the fault suites cover that). Stream nodes
// hold one entry, so that "MAXLEN ~" trims exactly and the model can tell
// exactly which cursors fell out of the history.
func TestModel(t *testing.T) {
	r := testredis.Start(t, testredis.WithArgs("--stream-node-max-entries", "1"))
	runModel(t, func(prefix string) Config {
		return Config{URL: r.URL() + "?dial_timeout=1s&read_timeout=1s&write_timeout=1s", Prefix: prefix}
	})
}

// TestModelCluster is TestModel on a Redis Cluster of three primaries: the
// model's topics spread over the shards.
func TestModelCluster(t *testing.T) {
	c := testredis.StartCluster(t, 3, 0, testredis.WithArgs("--stream-node-max-entries", "1"))
	runModel(t, func(prefix string) Config { return Config{URL: c.URL(), Cluster: true, Prefix: prefix} })
}

func runModel(t *testing.T, config func(prefix string) Config) {
	prefix := ""
	fresh := func() { prefix = fmt.Sprintf("m%08x", rand.Uint32()) }
	fresh()
	instance := func(t testing.TB, o brokertest.Options) broker.Broker {
		cfg := config(prefix)
		cfg.HistorySize, cfg.QueueLimit, cfg.Logger = o.HistorySize, o.QueueLimit, warnLogger()
		return newBroker(t, nil, cfg)
	}
	checks := modelChecks
	if f := flag.Lookup("rapid.checks"); f != nil && f.Value.String() != f.DefValue {
		checks = 0 // as given
	}
	brokertest.RunModel(t, brokertest.Factory{
		New:              instance,
		SharedStorage:    true,
		IgnoreGoroutines: leakOptions,
	}, brokertest.ModelOptions{
		Restart: func(t testing.TB, o brokertest.Options) broker.Broker {
			fresh()
			return instance(t, o)
		},
		MaxChecks: checks,
	})
}
