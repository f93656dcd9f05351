// Package broker defines the contract between herald's SSE layer and the
// systems that store and fan out events.
//
// The data path is: publish -> Broker -> (Redis) -> Broker of each replica ->
// Subscription -> sse handler -> client. A Broker keeps one ordered log per
// topic; every event has a position (its ID) that all replicas agree on. A
// Subscription delivers, per topic, one ordered and gap-free sequence: the
// replay of what followed the subscriber's cursor, then live events.
//
// Implementations: membroker (in-process) and redisbroker (Redis streams and
// pub/sub). The package brokertest holds the conformance suite every
// implementation runs.
package broker

import (
	"context"
	"errors"
	"sync/atomic"
	"time"
)

// Broker publishes events to topics and subscribes to them. Implementations
// are safe for concurrent use.
type Broker interface {
	// Publish appends msg to the topic's log and delivers it to live
	// subscribers as one atomic step. It returns the event's ID: its
	// position in the topic, the same on every replica.
	Publish(ctx context.Context, topic string, msg Message) (id string, err error)

	// Subscribe follows topics starting after the positions in from.
	// A topic missing from from (or with an empty position) starts live.
	//
	// The subscription is registered before Subscribe returns: an event
	// published after it returns is delivered. Cancelling ctx or calling
	// Close on the subscription releases everything it holds.
	//
	// A position the broker cannot honour exactly (another epoch, older than
	// the retained history, unparseable) is not an error: the subscription
	// delivers a KindReset item for that topic and continues with what the
	// history still holds. Subscribe fails only for invalid topics, a closed
	// broker or a cancelled ctx.
	Subscribe(ctx context.Context, topics []string, from Cursor) (Subscription, error)

	// Close releases the broker's resources and ends every subscription
	// with ErrClosed. Publish and Subscribe fail with ErrClosed afterwards.
	Close() error
}

// Subscription is one subscriber's ordered view of its topics.
//
// Items of one topic arrive in log order; items of different topics are
// interleaved in the order the broker saw them. For every topic the first
// item is a KindPosition (possibly preceded by a KindReset) telling where the
// sequence starts, so a consumer always knows a resumable cursor, even
// before the first event.
//
// Ready and Take may be used from one goroutine only; Close from any.
type Subscription interface {
	// Ready returns a channel that receives a value whenever Take may have
	// something new: items, or the end of the subscription.
	Ready() <-chan struct{}

	// Take appends every pending item to dst and returns it, without
	// blocking. Once the subscription has ended and every pending item was
	// taken, it returns the reason: ErrSlowConsumer, ErrClosed (Close was
	// called or the broker closed), ctx.Err(), or a broker failure.
	Take(dst []*Event) ([]*Event, error)

	// Close ends the subscription and releases its resources at once. It is
	// idempotent and safe for concurrent use.
	Close() error
}

// Message is what a publisher sends.
type Message struct {
	// Type is the SSE event type; empty means the default "message".
	Type string
	// Data is the payload, any UTF-8 text (it may contain line breaks).
	Data string
	// Key, if not empty, is an idempotency key (see ValidateKey): within
	// the broker's idempotency window, a second publish to the same topic
	// with the same key appends nothing and returns the first publish's
	// ID, so a publisher that never got an answer can retry blindly. The
	// same key with another Type or Data within the window fails with
	// ErrKeyConflict. Keys of different topics are independent.
	Key string
}

// DefaultIdempotencyWindow is how long brokers remember an idempotency key
// unless configured otherwise.
const DefaultIdempotencyWindow = 5 * time.Minute

// Publication is one event of a batch: its topic and message.
type Publication struct {
	Topic string
	Message
}

// PublishResult is the outcome of one event of a batch: its ID, or why it
// was not published.
type PublishResult struct {
	ID  string
	Err error
}

// BatchPublisher is implemented by brokers that publish many events in
// fewer steps than one Publish each (redisbroker: one pipeline).
//
// PublishBatch publishes every event of batch as Publish would and returns
// one result per event, in batch order. Events are published in batch
// order, so events to one topic keep their batch order in its log. An
// event that fails (an invalid topic, a key conflict) fails alone: the
// others are still published. Use the package function PublishBatch to
// publish a batch through any Broker.
type BatchPublisher interface {
	PublishBatch(ctx context.Context, batch []Publication) []PublishResult
}

// PublishBatch publishes batch through b: with b's PublishBatch if it is a
// BatchPublisher, else one Publish after the other.
func PublishBatch(ctx context.Context, b Broker, batch []Publication) []PublishResult {
	if bp, ok := b.(BatchPublisher); ok {
		return bp.PublishBatch(ctx, batch)
	}
	res := make([]PublishResult, len(batch))
	for i, p := range batch {
		res[i].ID, res[i].Err = b.Publish(ctx, p.Topic, p.Message)
	}
	return res
}

// Kind tells what a subscription item is.
type Kind uint8

const (
	// KindEvent is a published event.
	KindEvent Kind = iota
	// KindPosition moves the topic's cursor to ID without an event: the
	// sequence continues after ID. Every topic's sequence starts with one.
	KindPosition
	// KindReset says the subscriber's cursor for Topic could not be honoured
	// exactly; Reason says why. Events may have been missed. A KindPosition
	// and the remaining history follow.
	KindReset
)

// ResetReason says why a subscriber's cursor could not be honoured
// exactly: one of the Reason constants, carried by KindReset items and by
// herald's reset event (its "reason" field).
type ResetReason string

// The reasons of KindReset items.
const (
	// ReasonTruncated: the cursor is older than the retained history.
	ReasonTruncated ResetReason = "truncated"
	// ReasonEpoch: the cursor belongs to another epoch of the topic's log
	// (the broker restarted without its history, or the history was lost).
	ReasonEpoch ResetReason = "epoch"
	// ReasonUnknown: the cursor is not one this broker can place (another
	// format or version, or a position the log never reached).
	ReasonUnknown ResetReason = "unknown-cursor"
	// ReasonFailover: events this subscriber received are no longer in the
	// topic's log: a replica that had not received them yet was promoted
	// (asynchronous replication lost the last acknowledged writes). What
	// follows is the log as the new primary has it.
	ReasonFailover ResetReason = "failover"
)

// Event is one item of a subscription. Events are shared by every
// subscriber of a replica and must be treated as read-only.
type Event struct {
	Kind  Kind
	Topic string
	// ID is the position in Topic: for KindEvent the event's ID (as
	// returned by Publish), for KindPosition the position the sequence
	// continues from. Empty for KindReset.
	ID string
	// Type and Data: see Message. Empty unless Kind is KindEvent.
	Type string
	Data string
	// Time is when the event was published (zero if unknown); used for
	// publish-to-deliver latency.
	Time time.Time
	// Reason is set for KindReset: one of the Reason constants.
	Reason ResetReason

	memo atomic.Pointer[[]byte]
}

// Memo returns the value build produces for e, calling build at most once per
// event in the common case (concurrent first callers may both build; one
// result wins). It lets a consumer encode a shared event once per replica
// instead of once per connection. There is one memo slot per event: one
// consumer package owns it (pkg/sse).
func (e *Event) Memo(build func(*Event) []byte) []byte {
	if p := e.memo.Load(); p != nil {
		return *p
	}
	b := build(e)
	if e.memo.CompareAndSwap(nil, &b) {
		return b
	}
	return *e.memo.Load()
}

// Cursor maps topics to the position a subscriber has seen last.
type Cursor map[string]string

// Errors shared by brokers.
var (
	// ErrClosed: the broker or subscription was closed.
	ErrClosed = errors.New("broker: closed")
	// ErrSlowConsumer: the subscriber fell more than its queue limit behind
	// and was disconnected; it may resume from its cursor.
	ErrSlowConsumer = errors.New("broker: slow consumer: queue limit exceeded")
	// ErrUnavailable: the backing store cannot be reached now; retry later.
	ErrUnavailable = errors.New("broker: unavailable")
	// ErrInvalidTopic: a topic name breaks the rules of ValidateTopic.
	ErrInvalidTopic = errors.New("broker: invalid topic")
	// ErrInvalidMessage: an event type or idempotency key breaks the rules
	// of ValidateMessage.
	ErrInvalidMessage = errors.New("broker: invalid message")
	// ErrKeyConflict: the idempotency key was used within the window for
	// another event of the topic (another type or data).
	ErrKeyConflict = errors.New("broker: idempotency key conflict")
)

// DefaultQueueLimit is the number of pending items a subscriber may fall
// behind before a broker disconnects it with ErrSlowConsumer, unless
// configured otherwise.
const DefaultQueueLimit = 1024
