package membroker

import (
	"context"
	"sync"
	"time"

	"github.com/herald-sse/herald/pkg/broker"
)

// directory holds the records of broker.Directory: in one process, the
// replicas sharing it are the servers of that process (usually one).
type directory struct {
	mu    sync.Mutex
	nodes map[string]dirEntry
}

type dirEntry struct {
	record  []byte
	expires time.Time
}

// Announce implements broker.Directory.
func (b *Broker) Announce(ctx context.Context, node string, record []byte, ttl time.Duration) error {
	if err := b.alive(ctx); err != nil {
		return err
	}
	d := &b.dir
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.nodes == nil {
		d.nodes = make(map[string]dirEntry)
	}
	d.nodes[node] = dirEntry{record: append([]byte(nil), record...), expires: b.now().Add(ttl)}
	return nil
}

// Withdraw implements broker.Directory.
func (b *Broker) Withdraw(ctx context.Context, node string) error {
	d := &b.dir
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.nodes, node)
	return nil
}

// Nodes implements broker.Directory.
func (b *Broker) Nodes(ctx context.Context) ([][]byte, error) {
	if err := b.alive(ctx); err != nil {
		return nil, err
	}
	now := b.now()
	d := &b.dir
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([][]byte, 0, len(d.nodes))
	for id, e := range d.nodes {
		if !now.Before(e.expires) {
			delete(d.nodes, id)
			continue
		}
		out = append(out, e.record)
	}
	return out, nil
}

// alive fails once ctx is done or the broker is closed.
func (b *Broker) alive(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.RLock()
	closed := b.closed
	b.mu.RUnlock()
	if closed {
		return broker.ErrClosed
	}
	return nil
}

// TopicInfo implements broker.Inspector.
func (b *Broker) TopicInfo(ctx context.Context, name string) (broker.TopicInfo, error) {
	if err := broker.ValidateTopic(name); err != nil {
		return broker.TopicInfo{}, err
	}
	if err := b.alive(ctx); err != nil {
		return broker.TopicInfo{}, err
	}
	b.mu.RLock()
	t, high := b.topics[name], b.dropHigh
	b.mu.RUnlock()
	info := broker.TopicInfo{Epoch: b.epoch}
	if t == nil {
		tag := topicTag(name)
		probe := &topicLog{prefix: b.epoch + "-" + tag + "-"}
		info.LastID = probe.id(high)
		return info, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.expire(b.now(), b.ttl)
	info.Length = int64(t.n)
	info.LastID = t.id(t.seq)
	if t.n > 0 {
		info.FirstID = t.at(0).ID
	}
	return info, nil
}

// LocalTopics implements broker.Inspector.
func (b *Broker) LocalTopics(fn func(topic string, subscribers int) bool) {
	b.mu.RLock()
	topics := make([]*topicLog, 0, len(b.topics))
	for _, t := range b.topics {
		topics = append(topics, t)
	}
	b.mu.RUnlock()
	for _, t := range topics {
		t.mu.Lock()
		n := len(t.subs)
		t.mu.Unlock()
		if n > 0 && !fn(t.name, n) {
			return
		}
	}
}

var (
	_ broker.Directory = (*Broker)(nil)
	_ broker.Inspector = (*Broker)(nil)
)
