package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/herald-sse/herald/pkg/broker"
)

// The cluster view (broker.Directory): for prefix P,
//
//	P:nodes:{P}       sorted set of node names, scored by when their record
//	                  expires (Unix ms, the announcer's clock): the index
//	P:node:{P}:<name> the node's record, expiring on Redis's clock (PX)
//
// Both share the hash tag {P}, hence one Cluster slot. A record's own
// expiry decides whether the node is alive; the index only lists where to
// look, and entries that expired over a minute ago are trimmed from it.

// indexSlack is how long past its expiry an index entry is kept, against
// clock skew between replicas: the record's PX decides, not the score.
const indexSlack = time.Minute

func (b *Broker) nodesKey() string           { return b.prefix + ":nodes:{" + b.prefix + "}" }
func (b *Broker) nodeKey(node string) string { return b.prefix + ":node:{" + b.prefix + "}:" + node }

// Announce implements broker.Directory: the record with PX ttl and the
// index entry, in one round trip.
func (b *Broker) Announce(ctx context.Context, node string, record []byte, ttl time.Duration) error {
	if b.isClosed.Load() {
		return broker.ErrClosed
	}
	if ttl < time.Millisecond {
		return errors.New("redisbroker: announce: ttl must be at least 1ms")
	}
	now := time.Now()
	_, err := b.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, b.nodeKey(node), record, ttl)
		p.ZAdd(ctx, b.nodesKey(), redis.Z{Score: float64(now.Add(ttl).UnixMilli()), Member: node})
		p.ZRemRangeByScore(ctx, b.nodesKey(), "-inf", "("+strconv.FormatInt(now.Add(-indexSlack).UnixMilli(), 10))
		return nil
	})
	return b.inspectError("announce", err)
}

// Withdraw implements broker.Directory.
func (b *Broker) Withdraw(ctx context.Context, node string) error {
	if b.isClosed.Load() {
		return broker.ErrClosed
	}
	_, err := b.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, b.nodeKey(node))
		p.ZRem(ctx, b.nodesKey(), node)
		return nil
	})
	return b.inspectError("withdraw", err)
}

// Nodes implements broker.Directory: the index, then the records it names
// that still exist (two round trips, O(nodes)).
func (b *Broker) Nodes(ctx context.Context) ([][]byte, error) {
	if b.isClosed.Load() {
		return nil, broker.ErrClosed
	}
	names, err := b.rdb.ZRange(ctx, b.nodesKey(), 0, -1).Result()
	if err != nil {
		return nil, b.inspectError("nodes", err)
	}
	if len(names) == 0 {
		return nil, nil
	}
	keys := make([]string, len(names))
	for i, n := range names {
		keys[i] = b.nodeKey(n)
	}
	vals, err := b.rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, b.inspectError("nodes", err)
	}
	out := make([][]byte, 0, len(vals))
	for _, v := range vals {
		if s, ok := v.(string); ok {
			out = append(out, []byte(s))
		}
	}
	return out, nil
}

// TopicInfo implements broker.Inspector with one call of the read function
// (which always runs on the primary), asking for no entry.
func (b *Broker) TopicInfo(ctx context.Context, topic string) (broker.TopicInfo, error) {
	if err := broker.ValidateTopic(topic); err != nil {
		return broker.TopicInfo{}, err
	}
	if b.isClosed.Load() {
		return broker.TopicInfo{}, broker.ErrClosed
	}
	r, err := b.read(ctx, topic, streamID{ms: 1<<63 - 1}, 1)
	if err != nil {
		return broker.TopicInfo{}, b.inspectError("topic info", err)
	}
	info := broker.TopicInfo{Length: r.length, Epoch: r.epoch, LastID: formatID(r.epoch, r.last)}
	if r.length > 0 {
		info.FirstID = formatID(r.epoch, r.first)
	}
	return info, nil
}

// LocalTopics implements broker.Inspector: the topics this broker follows
// on Redis for its own subscribers.
func (b *Broker) LocalTopics(fn func(topic string, subscribers int) bool) {
	b.mu.Lock()
	topics := make([]*topic, 0, len(b.topics))
	for _, t := range b.topics {
		topics = append(topics, t)
	}
	b.mu.Unlock()
	for _, t := range topics {
		t.mu.Lock()
		n := len(t.live) + len(t.loading)
		t.mu.Unlock()
		if n > 0 && !fn(t.name, n) {
			return
		}
	}
}

func (b *Broker) inspectError(op string, err error) error {
	if err == nil {
		return nil
	}
	if b.isClosed.Load() {
		return broker.ErrClosed
	}
	if isServerError(err) && !transientServerError(err.Error()) {
		return fmt.Errorf("redisbroker: %s: %w", op, err)
	}
	return fmt.Errorf("%w: redis: %w", broker.ErrUnavailable, err)
}

var (
	_ broker.Directory = (*Broker)(nil)
	_ broker.Inspector = (*Broker)(nil)
)
