package broker

import (
	"context"
	"time"
)

// The interfaces below are optional: a Broker implements them to let a
// server show operators its fleet and its topics (herald's /api/nodes,
// /api/topics and status page). Neither is part of the data path, and a
// Broker without them still works everywhere.

// Directory is implemented by brokers through which the replicas sharing
// them can see one another. Each replica announces an opaque record of
// itself, again and again before it expires, so that a replica that dies
// vanishes by itself.
type Directory interface {
	// Announce stores record as node's, replacing the previous one; it
	// expires after ttl unless announced again.
	Announce(ctx context.Context, node string, record []byte, ttl time.Duration) error
	// Withdraw removes node's record at once (a replica shutting down).
	Withdraw(ctx context.Context, node string) error
	// Nodes returns the records that have not expired, in no particular
	// order. Its cost grows with the number of nodes, not of topics.
	Nodes(ctx context.Context) ([][]byte, error)
}

// TopicInfo describes a topic's retained history.
type TopicInfo struct {
	// Length is the number of events retained.
	Length int64
	// FirstID is the oldest retained event's ID; empty when none is.
	FirstID string
	// LastID is the position of the newest event published (retained or
	// not): what a subscriber starting live would resume from. For a topic
	// never published to, its initial position.
	LastID string
	// Epoch is the log's epoch: it changes when the history was lost.
	Epoch string
}

// Inspector is implemented by brokers that can describe their topics.
type Inspector interface {
	// TopicInfo describes topic's history; a topic never published to has
	// Length 0. It fails for an invalid topic or an unreachable store.
	TopicInfo(ctx context.Context, topic string) (TopicInfo, error)
	// LocalTopics calls fn for each topic that has subscribers on this
	// broker (this replica), with their number, until fn returns false.
	// It holds no lock across calls of fn that Publish or Subscribe need.
	LocalTopics(fn func(topic string, subscribers int) bool)
}
