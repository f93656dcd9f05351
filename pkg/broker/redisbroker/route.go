package redisbroker

import (
	"context"
	"fmt"
	"time"

	"github.com/herald-sse/herald/internal/hashslot"
	"github.com/redis/go-redis/v9"
)

// Redis Cluster: one shard (a pub/sub connection with its loops) per
// primary of the slot map, and every topic on the shard of the primary
// owning its slot. routeLoop reads the slot map (CLUSTER SLOTS) every
// routeInterval, and at once when a primary gave up a topic's slot (an
// unasked sunsubscribe) or answered a subscribe with a redirect; then it
// starts shards for new primaries, moves each topic whose slot changed
// owner to the new owner's shard (unconfirmed there: its live subscribers
// are refilled from the stream once the new primary confirms the shard
// channel), and retires the shards of nodes that are no longer primaries.

// routeInterval is how often the slot map is read in Redis Cluster.
const routeInterval = time.Second

// slots is the number of Redis Cluster hash slots.
const slots = hashslot.Slots

// slotMap is a Redis Cluster slot map: the primary's address per slot
// ("" for a slot no primary serves).
type slotMap struct {
	owner [slots]string
}

func (b *Broker) signalRoute() {
	if b.cluster == nil {
		return
	}
	select {
	case b.routeCh <- struct{}{}:
	default:
	}
}

// shardOf returns the shard carrying the channels of slot: the only one
// outside Cluster; in Cluster, the shard of the slot's primary in the last
// slot map read (nil if unknown yet). Call with b.mu held.
func (b *Broker) shardOf(slot int) *shard {
	if b.single != nil {
		return b.single
	}
	if b.routes == nil {
		return nil
	}
	return b.shards[b.routes.owner[slot]]
}

// routeLoop keeps the shards and the topics' routes in step with the slot
// map (see above).
func (b *Broker) routeLoop() {
	defer b.wg.Done()
	tick := time.NewTicker(routeInterval)
	defer tick.Stop()
	for {
		if err := b.refreshRoutes(); err != nil && b.ctx.Err() == nil {
			b.log.Debug("redisbroker: reading the cluster's slot map", "err", err)
		}
		select {
		case <-b.ctx.Done():
			return
		case <-tick.C:
		case <-b.routeCh:
		}
	}
}

// refreshRoutes reads the slot map and applies it (see routeLoop).
func (b *Broker) refreshRoutes() error {
	ctx, cancel := context.WithTimeout(b.ctx, routeInterval)
	defer cancel()
	cc, _ := b.rdb.(*redis.ClusterClient)
	cs, err := b.readSlots(ctx)
	if err != nil {
		return err
	}
	m := &slotMap{}
	primaries := map[string]bool{}
	for _, r := range cs {
		if len(r.Nodes) == 0 || r.Start < 0 || r.End >= slots || r.Start > r.End {
			continue
		}
		addr := r.Nodes[0].Addr
		primaries[addr] = true
		for i := r.Start; i <= r.End; i++ {
			m.owner[i] = addr
		}
	}
	if len(primaries) == 0 {
		return fmt.Errorf("redisbroker: CLUSTER SLOTS lists no primary")
	}
	var started, retired []*shard
	touched := map[*shard]bool{}
	b.mu.Lock()
	if b.closed || b.ctx.Err() != nil {
		b.mu.Unlock()
		return nil
	}
	for addr := range primaries {
		if b.shards[addr] == nil {
			s := b.newShard(addr, b.nodeClient(addr, 1))
			s.data = b.nodeClient(addr, 0)
			b.shards[addr] = s
			started = append(started, s)
		}
	}
	for addr, s := range b.shards {
		if !primaries[addr] {
			s.retired = true
			delete(b.shards, addr)
			retired = append(retired, s)
		}
	}
	b.lastSlots.Store(&cs)
	changed := b.routes == nil || b.routes.owner != m.owner
	if !changed {
		m = b.routes // keep the one in use (16384 addresses)
	} else if b.routes != nil {
		// go-redis routes the commands the broker sends through it by its
		// own view of the slot map, which it reloads on a redirect only
		// (or every minute): a primary that died sends none. The
		// broker's own client reads it from here (see slotsSource).
		cc.ReloadState(ctx)
	}
	b.routes = m
	if changed || len(started) > 0 || len(retired) > 0 {
		table := &routeTable{slots: m, shards: make(map[string]*shard, len(b.shards))}
		for addr, s := range b.shards {
			table.shards[addr] = s
		}
		b.table.Store(table)
	}
	moved := 0
	for _, t := range b.topics {
		sh := b.shards[m.owner[t.slot]]
		if sh == t.sh {
			continue
		}
		if t.sh != nil {
			touched[t.sh] = true
		}
		t.sh = sh
		if sh != nil {
			touched[sh] = true
		}
		moved++
		t.mu.Lock()
		// Whatever the old shard confirmed says nothing about the new one.
		t.setConfirmed(sh != nil && sh.confirmed[t.channel])
		work := t.confirmed && (t.stale || len(t.loading) > 0)
		t.mu.Unlock()
		if work {
			b.schedule(t)
		}
	}
	b.mu.Unlock()
	for _, s := range started {
		b.log.Info("redisbroker: following a Redis Cluster primary", "node", s.addr)
		s.start()
	}
	for s := range touched {
		s.signalReconcile()
	}
	if moved > 0 {
		b.log.Info("redisbroker: topics moved to another primary", "topics", moved)
	}
	for _, s := range retired {
		b.log.Info("redisbroker: no longer a Redis Cluster primary; closing its pub/sub connection", "node", s.addr)
		s.stop()
	}
	if len(started) > 0 || len(retired) > 0 {
		b.updateUp(nil)
	}
	return nil
}

// slotProbe bounds each node's answer when the slot map is read: a node
// that does not answer in time (dead, cut off) is skipped for the next.
const slotProbe = 300 * time.Millisecond

// readSlots reads CLUSTER SLOTS from the first node that answers: the
// primaries of the last map first (through their shards' clients), then
// the URL's nodes — never through the ClusterClient, which would ask the
// primary of a random slot in its own view, perhaps a dead one.
func (b *Broker) readSlots(ctx context.Context) ([]redis.ClusterSlot, error) {
	b.mu.Lock()
	clients := make([]*redis.Client, 0, len(b.shards)+len(b.seeds))
	for _, s := range b.shards {
		clients = append(clients, s.client)
	}
	b.mu.Unlock()
	clients = append(clients, b.seeds...)
	var first error
	for _, c := range clients {
		pctx, cancel := context.WithTimeout(ctx, slotProbe)
		// CLUSTER SLOTS, deprecated for CLUSTER SHARDS since Redis 7.0 but
		// served by every version: its reply is what go-redis's
		// ClusterOptions.ClusterSlots hands on (see slotsSource).
		//lint:ignore SA1019 the form go-redis's ClusterOptions.ClusterSlots takes
		cs, err := c.ClusterSlots(pctx).Result()
		cancel()
		if err == nil && len(cs) > 0 {
			return cs, nil
		}
		if first == nil {
			first = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	if first == nil {
		first = fmt.Errorf("redisbroker: CLUSTER SLOTS lists no slot")
	}
	return nil, first
}

// slotsSource is the ClusterOptions.ClusterSlots of the broker's own
// client: the slot map routeLoop read last (every second, and as soon as a
// primary gives up a slot), so that go-redis routes by the broker's view;
// before the first, a fresh read.
func (b *Broker) slotsSource(ctx context.Context) ([]redis.ClusterSlot, error) {
	if p := b.lastSlots.Load(); p != nil {
		return *p, nil
	}
	return b.readSlots(ctx)
}

// routeTable is what the data path routes by in Cluster: the slot map and
// the shards of its primaries, replaced as a whole when either changes.
type routeTable struct {
	slots  *slotMap
	shards map[string]*shard
}

// primaryFor returns the client of the primary that owns key's slot in
// the broker's slot map — the one its pub/sub connections follow, read
// every second and at once when a primary gives up a slot — or, before
// the first map, go-redis's. Publishes and reads go to it once: go-redis's
// ClusterClient would resend a publish after an EOF (a duplicate), and try
// a dead primary up to four times, a read timeout each, before its own
// view of the cluster catches up.
func (b *Broker) primaryFor(ctx context.Context, cc *redis.ClusterClient, key string) (*redis.Client, error) {
	if t := b.table.Load(); t != nil {
		if s := t.shards[t.slots.owner[keySlot(key)]]; s != nil {
			return s.data, nil
		}
	}
	return cc.MasterForKey(ctx, key)
}

// nodeClient returns a client of one Cluster node with the options of the
// broker's Cluster client: for a shard's pub/sub connection and slot map
// reads (poolSize 1), or for its publishes and reads (poolSize 0: the
// cluster options' pool size).
func (b *Broker) nodeClient(addr string, poolSize int) *redis.Client {
	o := b.cluster
	dial := o.Dialer
	if dial == nil {
		dial = newDialer(o.DialTimeout, o.TLSConfig)
	}
	return redis.NewClient(&redis.Options{
		Addr: addr, Protocol: o.Protocol, Username: o.Username, Password: o.Password,
		CredentialsProvider: o.CredentialsProvider, CredentialsProviderContext: o.CredentialsProviderContext,
		TLSConfig: o.TLSConfig, Dialer: dial,
		DialTimeout: o.DialTimeout, ReadTimeout: o.ReadTimeout, WriteTimeout: o.WriteTimeout,
		DialerRetries: o.DialerRetries, ContextTimeoutEnabled: true,
		MaxRetries: -1, PoolSize: max(poolSize, o.PoolSize),
	})
}

// keySlot returns the Redis Cluster hash slot of key (CLUSTER KEYSLOT).
func keySlot(key string) int { return hashslot.Of(key) }
