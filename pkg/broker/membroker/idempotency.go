package membroker

import (
	"hash/maphash"
	"sync"
	"time"

	"github.com/herald-sse/herald/pkg/broker"
)

// DefaultIdempotencyKeys is the number of idempotency keys a Broker
// remembers at most when Config.IdempotencyKeys is 0.
const DefaultIdempotencyKeys = 100_000

// keyRecord is what the broker remembers of a publish with a key: its ID,
// a hash of its content and when the record expires.
type keyRecord struct {
	id      string
	sum     uint64
	expires int64 // UnixNano
}

type recordKey struct{ topic, key string }

// queued is one record in insertion (hence expiry) order.
type queued struct {
	k       recordKey
	expires int64
}

// keys remembers idempotency keys for a window, at most max of them: when
// full, the oldest record is forgotten first. Records of one window expire
// in the order they were made, so one FIFO serves for expiry and eviction.
// Callers hold the topic's lock around get and put, which makes the check
// and the append one step per topic; keys' own lock is taken inside it
// (lock order: topicLog.mu before keys.mu).
type keys struct {
	window  time.Duration
	max     int
	seed    maphash.Seed
	evicted uint64 // records forgotten before their window ended

	// mu guards the fields below.
	mu   sync.Mutex
	recs map[recordKey]keyRecord
	fifo []queued
	head int
}

func newKeys(window time.Duration, max int) *keys {
	return &keys{window: window, max: max, seed: maphash.MakeSeed(), recs: map[recordKey]keyRecord{}}
}

// sum hashes a message's content (type and data; type has no LF).
func (ks *keys) sum(msg broker.Message) uint64 {
	var h maphash.Hash
	h.SetSeed(ks.seed)
	h.WriteString(msg.Type)
	h.WriteByte('\n')
	h.WriteString(msg.Data)
	return h.Sum64()
}

// get returns the live record of key on topic.
func (ks *keys) get(now time.Time, topic, key string) (keyRecord, bool) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	ks.expire(now.UnixNano())
	r, ok := ks.recs[recordKey{topic, key}]
	return r, ok
}

// put records a publish with a key. The caller checked with get (under the
// same topic lock) that the key has no live record.
func (ks *keys) put(now time.Time, topic, key string, r keyRecord) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	t := now.UnixNano()
	ks.expire(t)
	for len(ks.recs) >= ks.max && ks.head < len(ks.fifo) {
		ks.pop()
		ks.evicted++
	}
	r.expires = t + int64(ks.window)
	k := recordKey{topic, key}
	ks.recs[k] = r
	ks.fifo = append(ks.fifo, queued{k, r.expires})
}

// expire forgets every record whose window ended by now.
func (ks *keys) expire(now int64) {
	for ks.head < len(ks.fifo) && ks.fifo[ks.head].expires <= now {
		ks.pop()
	}
}

// pop forgets the oldest record.
func (ks *keys) pop() {
	q := ks.fifo[ks.head]
	ks.fifo[ks.head] = queued{}
	ks.head++
	// The map may hold a newer record of the same key (the old one
	// expired and the key was used again): only the queued one goes.
	if r, ok := ks.recs[q.k]; ok && r.expires == q.expires {
		delete(ks.recs, q.k)
	}
	if ks.head == len(ks.fifo) {
		ks.fifo, ks.head = ks.fifo[:0], 0
	} else if ks.head > 1024 && ks.head > len(ks.fifo)/2 {
		n := copy(ks.fifo, ks.fifo[ks.head:])
		clear(ks.fifo[n:])
		ks.fifo, ks.head = ks.fifo[:n], 0
	}
}

// count returns the number of records held (tests).
func (ks *keys) count() int {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	return len(ks.recs)
}
