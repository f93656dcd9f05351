package server

import (
	"context"
	"errors"
	"log/slog"
	"strings"
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
			Cluster:     cfg.RedisCluster,
			Prefix:      cfg.RedisPrefix,
			HistorySize: cfg.HistorySize,
			HistoryTTL:  cfg.HistoryTTL,
			QueueLimit:  cfg.QueueLimit,

			IdempotencyWindow: keyWindow(cfg.IdempotencyWindow),
			WaitReplicas:      cfg.RedisWaitReplicas,
			WaitTimeout:       cfg.RedisWaitTimeout,
			Logger:            log,
			OnStateChange:     m.SetBrokerUp,
			OnReconnect:       m.BrokerReconnected,
		})
		if err != nil {
			return nil, "", topologyError(cfg, err)
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

// topologyError names the setting of a Redis topology mistake found at
// start (the servers answered as something else than the URL says): the
// server does not start, and the message says which setting to change.
func topologyError(cfg Config, err error) error {
	msg := redisWords(err.Error())
	switch {
	case errors.Is(err, redisbroker.ErrTopology) && cfg.RedisCluster:
		return &ConfigError{Setting: "--redis-cluster", Err: errors.New(msg)}
	case errors.Is(err, redisbroker.ErrTopology):
		return &ConfigError{Setting: "--redis-url", Err: errors.New(msg)}
	}
	return err
}

// redisWords phrases a redisbroker error in the server's settings.
func redisWords(msg string) string {
	msg = strings.TrimPrefix(strings.TrimPrefix(msg, "redisbroker: "), "redis: ")
	return strings.ReplaceAll(msg, "Cluster mode", "--redis-cluster")
}
