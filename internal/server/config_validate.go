package server

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"strconv"

	"github.com/herald-sse/herald/pkg/broker/redisbroker"
	"github.com/herald-sse/herald/pkg/sse"
)

// Validate checks the configuration, naming the flag of a bad value.
func (c *Config) Validate() error {
	return c.validate(func(name string) string { return "--" + name })
}

func (c *Config) validate(setting func(string) string) error {
	bad := func(name, format string, a ...any) error {
		return &ConfigError{Setting: setting(name), Err: fmt.Errorf(format, a...)}
	}
	if _, port, err := net.SplitHostPort(c.Addr); err != nil {
		return bad("addr", "%q is not host:port: %v", c.Addr, err)
	} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		if _, err := net.LookupPort("tcp", port); err != nil {
			return bad("addr", "bad port %q", port)
		}
	}
	if c.RedisURL != "" {
		if err := redisbroker.CheckURL(c.RedisURL, c.RedisCluster); err != nil {
			name := "redis-url"
			if c.RedisCluster && errors.Is(err, redisbroker.ErrTopology) {
				name = "redis-cluster"
			}
			return bad(name, "%s", redisWords(err.Error()))
		}
	} else {
		if c.RedisCluster {
			return bad("redis-cluster", "needs --redis-url (the cluster's nodes)")
		}
		if c.RedisWaitReplicas > 0 {
			return bad("redis-wait-replicas", "needs --redis-url (the in-process broker has no replicas)")
		}
	}
	if c.RedisWaitReplicas < 0 {
		return bad("redis-wait-replicas", "must not be negative")
	}
	if err := redisbroker.ValidatePrefix(c.RedisPrefix); err != nil {
		return bad("redis-prefix", "%s", redisWords(err.Error()))
	}
	positive := []struct {
		name string
		v    int64
	}{
		{"heartbeat", int64(c.Heartbeat)},
		{"history-size", int64(c.HistorySize)},
		{"queue-limit", int64(c.QueueLimit)},
		{"max-topics", int64(c.MaxTopics)},
		{"max-event-bytes", c.MaxEventBytes},
		{"max-body-bytes", c.MaxBodyBytes},
		{"max-batch", int64(c.MaxBatch)},
		{"idempotency-keys", int64(c.IdempotencyKeys)},
		{"drain-timeout", int64(c.DrainTimeout)},
		{"drain-retry", int64(c.DrainRetry)},
		{"write-timeout", int64(c.WriteTimeout)},
		{"publish-timeout", int64(c.PublishTimeout)},
		{"publish-burst", int64(c.PublishBurst)},
		{"read-header-timeout", int64(c.ReadHeaderTimeout)},
		{"idle-timeout", int64(c.IdleTimeout)},
		{"node-interval", int64(c.NodeInterval)},
		{"redis-wait-timeout", int64(c.RedisWaitTimeout)},
	}
	for _, p := range positive {
		if p.v <= 0 {
			return bad(p.name, "must be greater than zero")
		}
	}
	nonNegative := []struct {
		name string
		v    int64
	}{
		{"history-ttl", int64(c.HistoryTTL)},
		{"idempotency-window", int64(c.IdempotencyWindow)},
		{"max-connections", int64(c.MaxConnections)},
		{"drain-delay", int64(c.DrainDelay)},
		{"jwt-leeway", int64(c.JWTLeeway)},
		{"max-last-event-id-bytes", int64(c.MaxLastEventIDBytes)},
	}
	for _, p := range nonNegative {
		if p.v < 0 {
			return bad(p.name, "must not be negative")
		}
	}
	if c.DrainDelay >= c.DrainTimeout {
		return bad("drain-delay", "%v must be shorter than --drain-timeout (%v)", c.DrainDelay, c.DrainTimeout)
	}
	for _, o := range c.CORSOrigins {
		if err := validateOrigin(o); err != nil {
			return bad("cors-origins", "%v", err)
		}
	}
	if c.PublishRate < 0 || math.IsNaN(c.PublishRate) || math.IsInf(c.PublishRate, 0) {
		return bad("publish-rate", "must be a number of requests per second, 0 for no limit")
	}
	if least := sse.MaxCursorLen(c.MaxTopics); c.MaxLastEventIDBytes > 0 && c.MaxLastEventIDBytes < least {
		return bad("max-last-event-id-bytes", "%d cannot hold the cursor of a stream of --max-topics=%d topics (at least %d)",
			c.MaxLastEventIDBytes, c.MaxTopics, least)
	}
	if c.NodeID != "" {
		if err := validateNodeID(c.NodeID); err != nil {
			return bad("node-id", "%v", err)
		}
	}
	if _, err := c.authorizer(setting); err != nil {
		return err
	}
	return nil
}

// validateNodeID accepts 1-128 printable ASCII characters without spaces:
// the node's name in logs, Redis keys and the cluster view.
func validateNodeID(id string) error {
	if len(id) == 0 || len(id) > 128 {
		return fmt.Errorf("%q must be 1-128 characters", id)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c <= ' ' || c > '~' {
			return fmt.Errorf("%q: only printable ASCII without spaces", id)
		}
	}
	return nil
}

// validateOrigin accepts "*" or a serialized origin: scheme://host[:port].
func validateOrigin(o string) error {
	if o == "*" {
		return nil
	}
	u, err := url.Parse(o)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q is not an origin like https://app.example.com or *", o)
	}
	return nil
}
