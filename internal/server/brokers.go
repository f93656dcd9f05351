package server

import (
	"context"
	"errors"
	"log/slog"

	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/broker/membroker"
)

// newBroker builds the broker the configuration selects and returns its
// kind for logs: "memory" (the default) or "redis" (--redis-url).
func newBroker(ctx context.Context, cfg Config, log *slog.Logger, m *Metrics) (broker.Broker, string, error) {
	if cfg.RedisURL != "" {
		return nil, "", errors.New("--redis-url: the Redis broker is not part of this build yet")
	}
	b := membroker.New(membroker.Config{
		HistorySize: cfg.HistorySize,
		HistoryTTL:  cfg.HistoryTTL,
		QueueLimit:  cfg.QueueLimit,
	})
	m.SetBrokerUp(true) // in-process: always reachable
	return b, "memory", nil
}
