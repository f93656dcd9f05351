package redisbroker

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/herald-sse/herald/pkg/broker"
	"github.com/redis/go-redis/v9"
)

// ErrTopology is wrapped by the errors of New (and CheckURL) that say the
// configuration names another Redis topology than the one it reaches or
// describes: a Sentinel or a Cluster node behind a standalone URL, several
// addresses without master_name or Cluster, a Sentinel URL whose master
// name the sentinels do not know, Cluster against a server that is not a
// cluster node.
var ErrTopology = errors.New("redisbroker: wrong Redis topology")

// ErrNotReplicated is wrapped, with broker.ErrUnavailable, by the error of
// a publish that Redis ran but that WAIT did not confirm on
// Config.WaitReplicas replicas within Config.WaitTimeout: the event is in
// the primary's log, and may or may not survive a failover. A retry with
// the same idempotency key is safe: it appends nothing if the event is
// there, and waits for the replicas again.
var ErrNotReplicated = errors.New("redisbroker: the event may or may not have been kept")

// ErrSubscribeRefused ends the subscriptions of a topic whose channel
// Redis refused to subscribe to (for example an ACL user without the
// channel permission: NOPERM). The error names the topic and carries
// Redis's reply.
var ErrSubscribeRefused = errors.New("redisbroker: Redis refused the subscription")

func (b *Broker) publishError(err error) error {
	switch {
	case b.isClosed.Load():
		// Close shuts the client (and its connections) under calls in
		// flight: whatever they fail with — redis.ErrClosed, "use of closed
		// network connection" on a read, a write or a SetDeadline — the
		// cause is the Close.
		return broker.ErrClosed
	case isServerError(err):
		msg := err.Error()
		switch {
		case strings.Contains(msg, "herald: idempotency key conflict"):
			return fmt.Errorf("%w: %s", broker.ErrKeyConflict, msg)
		case strings.Contains(msg, "herald: invalid topic"):
			return fmt.Errorf("%w: %s", broker.ErrInvalidTopic, msg)
		case strings.Contains(msg, "herald: "):
			return fmt.Errorf("%w: %s", broker.ErrInvalidMessage, msg)
		case transientServerError(msg):
			return fmt.Errorf("%w: redis: %w", broker.ErrUnavailable, err)
		}
		return fmt.Errorf("redisbroker: publish: %w", err)
	}
	return fmt.Errorf("%w: redis: %w", broker.ErrUnavailable, err)
}

// isServerError reports whether Redis answered with an error reply (as
// opposed to a network failure or timeout).
func isServerError(err error) bool {
	var re redis.Error
	if !errors.As(err, &re) {
		return false
	}
	var ne net.Error
	return !errors.As(err, &ne)
}

func transientServerError(msg string) bool {
	for _, p := range []string{"LOADING", "BUSY", "READONLY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "MOVED", "ASK"} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}
