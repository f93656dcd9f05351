// Package membroker is herald's in-process broker: one process, no
// replicas, history in memory. It sits where the Redis round trip sits for
// redisbroker: publish -> membroker (per-topic log + fan-out) ->
// subscriptions -> sse handler.
//
// # Positions
//
// Every Broker has an epoch, 8 hex digits of a random UUID, chosen by New.
// An event ID is "<epoch>-<tag>-<seq>": tag is 8 hex digits of the SHA-1 of
// the topic's name (so a position knows its topic), seq counts the topic's
// events from 1 (see below for topics created again after they were
// dropped), and the position before a topic's first event is
// "<epoch>-<tag>-0". A cursor of another epoch (another process, or the
// same process restarted) gets a broker.ReasonEpoch reset; a position of
// another topic (its tag differs), one the broker cannot parse, or one ahead
// of the topic's head, a broker.ReasonUnknown reset; one older than the
// retained history a broker.ReasonTruncated reset. Each reset is followed
// by the whole retained history and live events. Two topics share a tag
// with probability 2^-32: only then could a position of one pass for the
// other's.
//
// # Memory and idle topics
//
// A topic costs a fixed part of about 220 bytes (its state, name and map
// entry) plus its history: at most HistorySize events of about 160 bytes
// each (the Event, its ID and its ring slot) plus their Type and Data. The
// ring grows by doubling up to HistorySize, so a topic with few events is
// small. (Measured by TestTopicFootprint: 376 bytes for a topic with one
// event, 15.7 kB with 100 events of 16-byte payloads.) A subscriber costs
// one 16-byte slot per topic it follows, plus its queue.
//
// A topic is dropped — its memory freed — when it has no subscriber and no
// retained event: when its last subscriber leaves a topic that never had an
// event (or whose events all expired), and when a periodic sweep finds a
// topic whose history expired (only with HistoryTTL set; the sweep runs every
// HistoryTTL/2, at least every second and at most every minute). Without
// HistoryTTL a topic that ever had an event is kept for the life of the
// Broker: memory grows with the number of distinct topics published to,
// bounded per topic by HistorySize.
//
// Dropping a topic forgets its head. To keep cursors honest anyway, a topic
// created after any drop does not count from 0 but from the highest head of
// any dropped topic: a cursor from the dropped incarnation is then never
// ahead of the new one, so it gets a broker.ReasonTruncated reset (its
// events expired) — or, if it was exactly at that highest head, the new
// incarnation's events without a reset — and never a silent gap.
package membroker

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/broker/brokerutil"
)

// DefaultHistorySize is the number of events kept per topic when
// Config.HistorySize is 0.
const DefaultHistorySize = 1000

// Config configures a Broker. The zero value is usable.
type Config struct {
	// HistorySize is the number of events kept per topic for replay.
	// 0 means DefaultHistorySize (1000); a negative value keeps no history
	// (every cursor but the head then gets a broker.ReasonTruncated reset).
	HistorySize int

	// HistoryTTL is the age limit of retained events: events published
	// longer ago are dropped from the history (checked on every publish and
	// subscribe of the topic, and by a sweep; see the package comment).
	// 0 means no age limit.
	HistoryTTL time.Duration

	// QueueLimit is the number of live items a subscription may have
	// pending before it is ended with broker.ErrSlowConsumer. 0 means
	// broker.DefaultQueueLimit.
	QueueLimit int

	// IdempotencyWindow is how long a publish with a key (Message.Key) is
	// remembered: a second publish to the topic with the same key within
	// it returns the first one's ID and appends nothing. 0 means
	// broker.DefaultIdempotencyWindow (5 minutes); negative turns keys off
	// (a publish with a key is then an ordinary publish).
	IdempotencyWindow time.Duration

	// IdempotencyKeys bounds the number of keys remembered: when it is
	// reached, the oldest key is forgotten before its window ends (a retry
	// with it would then publish again; KeysEvicted counts them). 0 means
	// DefaultIdempotencyKeys (100,000). A key costs about 150 bytes plus
	// the lengths of its topic name, its key and its event ID.
	IdempotencyKeys int

	// Now returns the current time; nil means time.Now. Tests use it to
	// control the clock for HistoryTTL and Event.Time.
	Now func() time.Time
}

// Broker is an in-process broker.Broker. It is safe for concurrent use.
// Create it with New and release it with Close.
type Broker struct {
	epoch       string
	historySize int
	ttl         time.Duration
	queueLimit  int
	now         func() time.Time
	keys        *keys        // nil: idempotency keys off
	lastLive    atomic.Int64 // UnixNano of the last publish
	dir         directory    // broker.Directory's records

	// Lock order: Broker.mu before topicLog.mu before brokerutil.Queue's lock.
	mu       sync.RWMutex         // guards the fields below
	topics   map[string]*topicLog // nil once closed
	closed   bool
	dropHigh uint64 // highest head of any dropped topic: a new topic's seq starts here

	stopSweep chan struct{} // closed by Close; nil without HistoryTTL
	swept     chan struct{} // closed when the sweeper has exited
}

// New returns a Broker configured by cfg. With a HistoryTTL it starts one
// goroutine that drops expired idle topics; Close stops it.
func New(cfg Config) *Broker {
	b := &Broker{
		epoch:       newEpoch(),
		historySize: cfg.HistorySize,
		ttl:         cfg.HistoryTTL,
		queueLimit:  cfg.QueueLimit,
		now:         cfg.Now,
		topics:      map[string]*topicLog{},
	}
	if b.historySize == 0 {
		b.historySize = DefaultHistorySize
	}
	b.historySize = max(b.historySize, 0)
	if b.queueLimit <= 0 {
		b.queueLimit = broker.DefaultQueueLimit
	}
	if b.now == nil {
		b.now = time.Now
	}
	if w := cfg.IdempotencyWindow; w >= 0 {
		if w == 0 {
			w = broker.DefaultIdempotencyWindow
		}
		n := cfg.IdempotencyKeys
		if n <= 0 {
			n = DefaultIdempotencyKeys
		}
		b.keys = newKeys(w, n)
	}
	if b.ttl > 0 {
		b.stopSweep, b.swept = make(chan struct{}), make(chan struct{})
		go b.sweeper(min(max(b.ttl/2, time.Second), time.Minute))
	}
	return b
}

// newEpoch returns 8 hex digits of a random UUID.
func newEpoch() string {
	u := uuid.New()
	return u.String()[:8]
}

// Epoch returns the broker's epoch, the first part of every ID it issues.
func (b *Broker) Epoch() string { return b.epoch }

// topicTag returns 8 hex digits of the SHA-1 of a topic's name.
func topicTag(name string) string {
	sum := sha1.Sum([]byte(name))
	return hex.EncodeToString(sum[:4])
}

// id renders the position seq of topic t.
func (t *topicLog) id(seq uint64) string {
	var buf [40]byte
	return string(strconv.AppendUint(append(buf[:0], t.prefix...), seq, 10))
}

// parseID returns the epoch, topic tag and seq of a position in this
// package's format: 8 lowercase hex digits, '-', 8 lowercase hex digits,
// '-', a decimal number without leading zeros.
func parseID(id string) (epoch, tag string, seq uint64, ok bool) {
	if len(id) < 19 || len(id) > 38 || id[8] != '-' || id[17] != '-' {
		return "", "", 0, false
	}
	for i := range 17 {
		if c := id[i]; i != 8 && !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return "", "", 0, false
		}
	}
	digits := id[18:]
	if len(digits) > 1 && digits[0] == '0' {
		return "", "", 0, false
	}
	seq, err := strconv.ParseUint(digits, 10, 64)
	if err != nil {
		return "", "", 0, false
	}
	return id[:8], id[9:17], seq, true
}

// topicLog is one topic's log (its retained history) and its subscribers.
type topicLog struct {
	name   string
	tag    string // topicTag(name)
	prefix string // "<epoch>-<tag>-": every ID of the topic starts with it

	mu     sync.Mutex // guards the fields below
	seq    uint64     // seq of the last event published: the head
	ring   []*broker.Event
	first  int // index in ring of the oldest retained event
	n      int // retained events
	subs   []member
	dead   bool // dropped from Broker.topics; look the topic up again
	closed bool // the broker is closed
}

// member is a subscription's entry in a topic: s.slot[k] is its index in
// topicLog.subs, where k is the topic's index in s.topics.
type member struct {
	s *subscriber
	k int
}

func (t *topicLog) at(i int) *broker.Event { return t.ring[(t.first+i)%len(t.ring)] }

// appendEvent adds e to the history, dropping the oldest beyond size.
func (t *topicLog) appendEvent(e *broker.Event, size int) {
	if size == 0 {
		return
	}
	if t.n < len(t.ring) {
		t.ring[(t.first+t.n)%len(t.ring)] = e
		t.n++
		return
	}
	if len(t.ring) < size { // grow by doubling, up to size
		ring := make([]*broker.Event, min(max(2*len(t.ring), 8), size))
		for i := range t.n {
			ring[i] = t.at(i)
		}
		t.ring, t.first = ring, 0
		t.ring[t.n] = e
		t.n++
		return
	}
	t.ring[t.first] = e // full: overwrite the oldest
	t.first = (t.first + 1) % len(t.ring)
}

// expire drops events published before now-ttl.
func (t *topicLog) expire(now time.Time, ttl time.Duration) {
	if ttl <= 0 {
		return
	}
	limit := now.Add(-ttl)
	for t.n > 0 && t.ring[t.first].Time.Before(limit) {
		t.ring[t.first] = nil
		t.first = (t.first + 1) % len(t.ring)
		t.n--
	}
	if t.n == 0 {
		t.ring, t.first = nil, 0
	}
}

// idle reports whether the topic may be dropped.
func (t *topicLog) idle() bool { return len(t.subs) == 0 && t.n == 0 && !t.dead }

// remove takes subs[i] out of the topic.
func (t *topicLog) remove(i int) {
	m := t.subs[i]
	m.s.slot[m.k] = -1
	last := len(t.subs) - 1
	if i != last {
		moved := t.subs[last]
		t.subs[i] = moved
		moved.s.slot[moved.k] = i
	}
	t.subs[last] = member{}
	t.subs = t.subs[:last]
}

// lockTopic returns the topic called name, locked, creating it if needed.
func (b *Broker) lockTopic(name string) (*topicLog, error) {
	for {
		b.mu.RLock()
		t, closed := b.topics[name], b.closed
		b.mu.RUnlock()
		if closed {
			return nil, broker.ErrClosed
		}
		if t == nil {
			b.mu.Lock()
			if b.closed {
				b.mu.Unlock()
				return nil, broker.ErrClosed
			}
			if t = b.topics[name]; t == nil {
				tag := topicTag(name)
				t = &topicLog{name: name, tag: tag, prefix: b.epoch + "-" + tag + "-", seq: b.dropHigh}
				b.topics[name] = t
			}
			b.mu.Unlock()
		}
		t.mu.Lock()
		switch {
		case t.closed:
			t.mu.Unlock()
			return nil, broker.ErrClosed
		case t.dead:
			t.mu.Unlock()
			continue
		}
		return t, nil
	}
}

// drop removes t from the broker if it is still idle.
func (b *Broker) drop(t *topicLog) {
	b.mu.Lock()
	defer b.mu.Unlock()
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.idle() || t.closed || b.topics[t.name] != t {
		return
	}
	t.dead = true
	delete(b.topics, t.name)
	b.dropHigh = max(b.dropHigh, t.seq)
}

// Publish implements broker.Broker. It validates topic and msg, appends the
// event to the topic's history and pushes it to every subscriber's queue,
// in one critical section of the topic (so live order is log order). It
// never blocks on subscribers: one whose queue is full is ended with
// broker.ErrSlowConsumer and removed from the topic.
func (b *Broker) Publish(ctx context.Context, topicName string, msg broker.Message) (string, error) {
	if err := broker.ValidateTopic(topicName); err != nil {
		return "", err
	}
	if err := broker.ValidateMessage(msg); err != nil {
		return "", err
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	t, err := b.lockTopic(topicName)
	if err != nil {
		return "", err
	}
	defer t.mu.Unlock()
	now := b.now()
	var sum uint64
	keyed := msg.Key != "" && b.keys != nil
	if keyed {
		sum = b.keys.sum(msg)
		if r, ok := b.keys.get(now, t.name, msg.Key); ok {
			if r.sum != sum {
				return "", fmt.Errorf("%w: key %q was used for another event of topic %q (%s) within the idempotency window", broker.ErrKeyConflict, msg.Key, t.name, r.id)
			}
			return r.id, nil
		}
	}
	t.seq++
	e := &broker.Event{Kind: broker.KindEvent, Topic: t.name, ID: t.id(t.seq), Type: msg.Type, Data: msg.Data, Time: now}
	b.lastLive.Store(now.UnixNano())
	if keyed {
		b.keys.put(now, t.name, msg.Key, keyRecord{id: e.ID, sum: sum})
	}
	t.expire(now, b.ttl)
	t.appendEvent(e, b.historySize)
	for i := 0; i < len(t.subs); {
		if t.subs[i].s.Push(e) {
			i++
		} else {
			t.remove(i) // ended (slow consumer, or closed concurrently)
		}
	}
	return e.ID, nil
}

// Subscribe implements broker.Broker. The replay of every topic is queued,
// and the subscription registered, before Subscribe returns.
func (b *Broker) Subscribe(ctx context.Context, topics []string, from broker.Cursor) (broker.Subscription, error) {
	if err := broker.ValidateTopics(topics); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s := &subscriber{
		b:      b,
		topics: make([]*topicLog, len(topics)),
		slot:   make([]int, len(topics)),
	}
	s.Init(b.queueLimit, s.unregister)
	for k, name := range topics {
		t, err := b.lockTopic(name)
		if err != nil {
			s.End(err)
			return nil, err
		}
		b.replay(&s.Queue, t, from[name])
		s.topics[k] = t
		s.slot[k] = len(t.subs)
		t.subs = append(t.subs, member{s, k})
		t.mu.Unlock()
	}
	s.EndWhenDone(ctx)
	return s, nil
}

// replay queues, for t locked, what follows cursor: an optional reset, the
// position, then the retained events after it.
func (b *Broker) replay(q *brokerutil.Queue, t *topicLog, cursor string) {
	t.expire(b.now(), b.ttl)
	if cursor == "" {
		q.Preload(&broker.Event{Kind: broker.KindPosition, Topic: t.name, ID: t.id(t.seq)})
		return
	}
	before := t.seq - uint64(t.n) // the position before the oldest retained event
	epoch, tag, seq, ok := parseID(cursor)
	var reason broker.ResetReason
	switch {
	case !ok, tag != t.tag:
		reason = broker.ReasonUnknown // not ours, or another topic's
	case epoch != b.epoch:
		reason = broker.ReasonEpoch
	case seq > t.seq:
		reason = broker.ReasonUnknown // never reached
	case seq < before:
		reason = broker.ReasonTruncated
	}
	skip := 0
	if reason != "" {
		q.Preload(
			&broker.Event{Kind: broker.KindReset, Topic: t.name, Reason: reason},
			&broker.Event{Kind: broker.KindPosition, Topic: t.name, ID: t.id(before)},
		)
	} else {
		q.Preload(&broker.Event{Kind: broker.KindPosition, Topic: t.name, ID: t.id(seq)})
		skip = int(seq - before)
	}
	if t.n == skip {
		return
	}
	// The retained events after the cursor, in at most two pieces of the ring.
	start := (t.first + skip) % len(t.ring)
	count := t.n - skip
	end := min(start+count, len(t.ring))
	q.Preload(t.ring[start:end]...)
	if rest := count - (end - start); rest > 0 {
		q.Preload(t.ring[:rest]...)
	}
}

// Close implements broker.Broker: every subscription ends with
// broker.ErrClosed (after its pending items), and Publish and Subscribe
// return broker.ErrClosed from then on. Close is idempotent.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	topics := b.topics
	b.topics = nil
	b.mu.Unlock()
	if b.stopSweep != nil {
		close(b.stopSweep)
		<-b.swept
	}
	var subs []*subscriber
	for _, t := range topics {
		t.mu.Lock()
		t.closed = true
		for _, m := range t.subs {
			subs = append(subs, m.s)
		}
		t.mu.Unlock()
	}
	for _, s := range subs {
		s.End(broker.ErrClosed)
	}
	return nil
}

// sweeper drops idle topics whose history expired, every interval.
func (b *Broker) sweeper(interval time.Duration) {
	defer close(b.swept)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-b.stopSweep:
			return
		case <-tick.C:
			b.sweep()
		}
	}
}

// sweep expires every topic's history and drops the idle ones.
func (b *Broker) sweep() {
	b.mu.RLock()
	topics := make([]*topicLog, 0, len(b.topics))
	for _, t := range b.topics {
		topics = append(topics, t)
	}
	b.mu.RUnlock()
	now := b.now()
	for _, t := range topics {
		t.mu.Lock()
		t.expire(now, b.ttl)
		idle := t.idle()
		t.mu.Unlock()
		if idle {
			b.drop(t)
		}
	}
}

// subscriber is one Subscribe call: a broker.Subscription on a brokerutil.Sub,
// a member of each of its topics' topicLog.
type subscriber struct {
	brokerutil.Sub
	b      *Broker
	topics []*topicLog // nil entries: not registered (Subscribe failed)
	slot   []int       // slot[k] guarded by topics[k].mu: index in topics[k].subs, -1 once removed
}

// unregister removes s from its topics once it has ended, dropping topics
// left idle.
func (s *subscriber) unregister() {
	for k, t := range s.topics {
		if t == nil {
			continue
		}
		t.mu.Lock()
		if s.slot[k] >= 0 {
			t.remove(s.slot[k])
		}
		idle := t.idle() && !t.closed
		t.mu.Unlock()
		if idle {
			s.b.drop(t)
		}
	}
}

// LastLiveEvent returns when the last event was published (zero if none
// was).
func (b *Broker) LastLiveEvent() time.Time {
	if n := b.lastLive.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// KeysEvicted returns the number of idempotency keys forgotten before their
// window ended because Config.IdempotencyKeys was reached.
func (b *Broker) KeysEvicted() uint64 {
	if b.keys == nil {
		return 0
	}
	b.keys.mu.Lock()
	defer b.keys.mu.Unlock()
	return b.keys.evicted
}
