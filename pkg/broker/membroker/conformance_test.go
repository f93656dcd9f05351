package membroker

import (
	"testing"

	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/broker/brokertest"
)

func TestConformance(t *testing.T) {
	brokertest.Run(t, brokertest.Factory{
		New: func(t testing.TB, o brokertest.Options) broker.Broker {
			b := New(Config{HistorySize: o.HistorySize, QueueLimit: o.QueueLimit})
			t.Cleanup(func() { b.Close() })
			return b
		},
	})
}

// TestModel runs the model-based test: cursors of every kind (stale, of
// another topic, of an earlier instance, garbage) against a reference model.
func TestModel(t *testing.T) {
	brokertest.RunModel(t, brokertest.Factory{
		New: func(t testing.TB, o brokertest.Options) broker.Broker {
			b := New(Config{HistorySize: o.HistorySize, QueueLimit: o.QueueLimit})
			t.Cleanup(func() { b.Close() })
			return b
		},
	}, brokertest.ModelOptions{})
}
