package redisbroker

import (
	"fmt"
	"testing"

	"github.com/herald-sse/herald/internal/testredis"
	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/broker/brokertest"
	"go.uber.org/goleak"
)

// leakOptions ignores the goroutines of the Docker client and of
// testcontainers, which outlive individual tests by design.
var leakOptions = []goleak.Option{
	goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
	goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
	goleak.IgnoreAnyFunction("github.com/testcontainers/testcontainers-go.(*DockerContainer).startLogProduction.func1"),
}

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, leakOptions...)
}

// newBroker returns a broker on r with cfg (URL filled in), closed at
// cleanup. The URL's options keep failures short in fault tests.
func newBroker(t testing.TB, r *testredis.Redis, cfg Config) *Broker {
	t.Helper()
	if cfg.URL == "" && cfg.Client == nil {
		cfg.URL = r.URL() + "?dial_timeout=1s&read_timeout=1s&write_timeout=1s"
	}
	b, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func TestConformance(t *testing.T) {
	r := testredis.Start(t)
	brokertest.Run(t, brokertest.Factory{
		New: func(t testing.TB, o brokertest.Options) broker.Broker {
			// The history size is baked into the prefix's function
			// library: one prefix per size, so instances of one test
			// share storage and tests do not change each other's trimming.
			prefix := DefaultPrefix
			if o.HistorySize != 0 {
				prefix = fmt.Sprintf("bt%d", o.HistorySize)
			}
			return newBroker(t, r, Config{Prefix: prefix, HistorySize: o.HistorySize, QueueLimit: o.QueueLimit})
		},
		SharedStorage:    true,
		ApproxTrim:       true,
		IgnoreGoroutines: leakOptions,
	})
}
