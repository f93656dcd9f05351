package server

import (
	"context"
	"log/slog"
	"time"

	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/broker/membroker"
	"github.com/herald-sse/herald/pkg/broker/redisbroker"
)

// newBroker builds the broker the configuration selects and returns its
// kind for logs: "memory" (the default) or "redis" (--redis-url).
//
// The Redis broker starts even when Redis is unreachable (publish answers
// 503 and streams wait until it is back); it fails only when Redis answers
// with an error, e.g. it refuses the function library.
func newBroker(ctx context.Context, cfg Config, log *slog.Logger, m *Metrics) (broker.Broker, string, error) {
	if cfg.RedisURL != "" {
		m.SetBrokerUp(false) // until the broker reports its connection
		b, err := redisbroker.New(ctx, redisbroker.Config{
			URL:         cfg.RedisURL,
			Prefix:      cfg.RedisPrefix,
			HistorySize: cfg.HistorySize,
			HistoryTTL:  cfg.HistoryTTL,
			QueueLimit:  cfg.QueueLimit,

			IdempotencyWindow: keyWindow(cfg.IdempotencyWindow),
			Logger:            log,
			OnStateChange:     m.SetBrokerUp,
			OnReconnect:       m.BrokerReconnected,
		})
		if err != nil {
			return nil, "", err
		}
		return b, "redis", nil
	}
	b := membroker.New(membroker.Config{
		HistorySize: cfg.HistorySize,
		HistoryTTL:  cfg.HistoryTTL,
		QueueLimit:  cfg.QueueLimit,

		IdempotencyWindow: keyWindow(cfg.IdempotencyWindow),
		IdempotencyKeys:   cfg.IdempotencyKeys,
	})
	m.SetBrokerUp(true) // in-process: always reachable
	return b, "memory", nil
}

// keyWindow maps --idempotency-window (0 = off) to the brokers' setting
// (0 = default, negative = off).
func keyWindow(w time.Duration) time.Duration {
	if w == 0 {
		return -1
	}
	return w
}
