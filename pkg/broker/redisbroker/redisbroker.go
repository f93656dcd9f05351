package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-sse/herald/pkg/broker"
	"github.com/redis/go-redis/v9"
)

const (
	pageSize     = 1000            // XRANGE page when replaying
	workers      = 4               // goroutines that load subscriptions from streams
	bufLimit     = 1 << 16         // live events kept for subscriptions being loaded
	headTimeout  = time.Second     // Subscribe's wait for a topic's head
	clockSkew    = time.Second     // tolerance when the head is unknown (see Subscribe)
	pingInterval = time.Second     // a pub/sub connection silent this long is pinged (see answerTimeout)
	maxBackoff   = 2 * time.Second // retry delay cap after Redis errors
)

// Broker implements broker.Broker on Redis. It is safe for concurrent use.
// It runs six goroutines (the pub/sub receive loop, the channel
// (un)subscriber, four stream loaders) whatever the number of
// subscriptions, and one Redis pub/sub connection besides the client's
// pool.
//
// The pub/sub connection is pinged when it has been silent for a second;
// when a command on it (PING, SUBSCRIBE) goes unanswered for a second, or
// it fails, it is closed and replaced by a new one, which subscribes every
// active topic again; every topic is then refilled from its stream, so
// live subscribers miss nothing and get nothing twice. A connection whose
// path died without a RST (a crashed host, a failover behind a stable
// address) is so replaced within about 2 s once Redis is reachable.
type Broker struct {
	rdb          redis.UniversalClient
	ownClient    bool
	topo         topology               // of Config.URL; standalone with Config.Client
	failover     *redis.FailoverOptions // of the own Sentinel client; nil otherwise
	cluster      *redis.ClusterOptions  // of the Cluster client; nil otherwise
	recentCap    int                    // live event IDs remembered per topic to check after a failover (topic.recent); 0 off
	waitReplicas int                    // Config.WaitReplicas
	waitTimeout  time.Duration          // Config.WaitTimeout, defaulted
	dialed       *connSet               // connections of the own client; nil with Config.Client
	prefix       string
	libName      string
	publishFn    string
	readFn       string
	touchFn      string
	code         string
	queueLimit   int
	log          *slog.Logger
	onState      func(bool)
	onReconn     func(string)

	loaded   atomic.Bool  // the library was loaded by this broker at least once
	refilled atomic.Int64 // events live subscribers got from the stream after a gap
	lastLive atomic.Int64 // UnixNano of the last live event on the pub/sub connection
	up       atomic.Bool
	isClosed atomic.Bool
	reconns  atomic.Int64

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	single  *shard        // standalone and Sentinel: the only shard; nil in Cluster
	routeCh chan struct{} // Cluster: cap 1, the slot map may have changed
	upMu    sync.Mutex    // serialises updateUp

	workCh chan struct{} // cap workers: work was queued

	mu     sync.Mutex // guards the fields below (and shard's, topic.sh); taken before any topic.mu
	closed bool
	topics map[string]*topic // by channel
	subs   map[*subscription]struct{}
	shards map[string]*shard // Cluster: by primary address
	routes *slotMap          // Cluster: the last slot map read; nil before
	seeds  []*redis.Client   // Cluster: clients of the URL's nodes, to read the slot map from

	lastSlots atomic.Pointer[[]redis.ClusterSlot] // Cluster: the last CLUSTER SLOTS reply (see slotsSource)
	table     atomic.Pointer[routeTable]          // Cluster: what publishes and reads route by (see primaryFor)

	wmu  sync.Mutex // guards work
	work []*topic

	pipe pipeliner // publishes waiting for the one in flight
}

// New connects to Redis, loads the function library and starts the
// broker's goroutines. Redis being unreachable is not an error: the broker
// starts anyway, logs it, and loads the library once Redis answers. New
// fails for an invalid configuration or when Redis answers the library load
// with an error (for example a Redis older than 7.0).
func New(ctx context.Context, cfg Config) (*Broker, error) {
	b := &Broker{
		rdb:        cfg.Client,
		prefix:     cfg.Prefix,
		queueLimit: cfg.QueueLimit,
		log:        cfg.Logger,
		onState:    cfg.OnStateChange,
		onReconn:   cfg.OnReconnect,
		routeCh:    make(chan struct{}, 1),
		workCh:     make(chan struct{}, workers),
		topics:     make(map[string]*topic),
		subs:       make(map[*subscription]struct{}),
		shards:     make(map[string]*shard),
	}
	b.pipe.limit = pipelinesInFlight
	if cfg.WaitReplicas < 0 || cfg.WaitTimeout < 0 {
		return nil, errors.New("redisbroker: negative WaitReplicas or WaitTimeout")
	}
	b.waitReplicas, b.waitTimeout = cfg.WaitReplicas, cfg.WaitTimeout
	if b.waitTimeout == 0 {
		b.waitTimeout = DefaultWaitTimeout
	}
	// A WAIT blocks its connection up to waitTimeout: the own client's
	// read timeout must outlast it.
	readTimeout := func(d *time.Duration) {
		if b.waitReplicas > 0 && *d < b.waitTimeout+time.Second {
			*d = b.waitTimeout + time.Second
		}
	}
	if b.prefix == "" {
		b.prefix = DefaultPrefix
	}
	if err := ValidatePrefix(b.prefix); err != nil {
		return nil, err
	}
	if b.log == nil {
		b.log = slog.Default()
	}
	size := cfg.HistorySize
	if size == 0 {
		size = DefaultHistorySize
	} else if size < 0 {
		size = 0
	}
	if cfg.HistoryTTL < 0 {
		return nil, errors.New("redisbroker: negative HistoryTTL")
	}
	ttl := cfg.HistoryTTL.Milliseconds()
	if cfg.HistoryTTL > 0 && ttl == 0 {
		ttl = 1
	}
	keyMs := int64(0)
	if w := cfg.IdempotencyWindow; w >= 0 {
		if w == 0 {
			w = broker.DefaultIdempotencyWindow
		}
		keyMs = max(w.Milliseconds(), 1)
	}
	if b.rdb == nil {
		if cfg.URL == "" {
			return nil, errors.New("redisbroker: Config needs URL or Client")
		}
		topo, err := parseTopology(cfg.URL, cfg.Cluster)
		if err != nil {
			if errors.Is(err, ErrTopology) {
				return nil, err
			}
			return nil, fmt.Errorf("redisbroker: %w", err)
		}
		b.topo = topo
		switch topo {
		case cluster:
			opt, err := clusterOptions(cfg.URL)
			if err != nil {
				return nil, fmt.Errorf("redisbroker: %w", err)
			}
			if err := checkCluster(ctx, opt); err != nil {
				return nil, err
			}
			readTimeout(&opt.ReadTimeout)
			if cfg.wrapDial != nil {
				opt.Dialer = cfg.wrapDial(opt.Dialer)
			}
			b.dialed = &connSet{}
			opt.Dialer = b.dialed.wrap(opt.Dialer)
			opt.ClusterSlots = b.slotsSource
			b.cluster = opt
			for _, a := range opt.Addrs {
				b.seeds = append(b.seeds, b.nodeClient(a, 1))
			}
			b.rdb = redis.NewClusterClient(opt)
		case sentinel:
			opt, err := failoverOptions(cfg.URL)
			if err != nil {
				return nil, fmt.Errorf("redisbroker: %w", err)
			}
			if err := checkSentinels(ctx, opt); err != nil {
				return nil, err
			}
			readTimeout(&opt.ReadTimeout)
			if cfg.wrapDial != nil {
				opt.Dialer = cfg.wrapDial(opt.Dialer)
			}
			b.failover = opt
			b.recentCap = recentFailover
			b.dialed = &connSet{}
			opt.Dialer = b.dialed.wrap(opt.Dialer)
			b.rdb = redis.NewFailoverClient(opt)
		default:
			opt, err := clientOptions(cfg.URL)
			if err != nil {
				return nil, fmt.Errorf("redisbroker: %w", err)
			}
			readTimeout(&opt.ReadTimeout)
			if cfg.wrapDial != nil {
				opt.Dialer = cfg.wrapDial(opt.Dialer)
			}
			b.dialed = &connSet{}
			opt.Dialer = b.dialed.wrap(opt.Dialer)
			b.rdb = redis.NewClient(opt)
			if err := checkStandalone(ctx, b.rdb, opt.Addr); err != nil {
				b.rdb.Close()
				return nil, err
			}
		}
		b.ownClient = true
	} else if c, ok := b.rdb.(*redis.Client); ok && !c.Options().ContextTimeoutEnabled {
		b.log.Warn("redisbroker: the Redis client ignores ctx deadlines (ContextTimeoutEnabled is off): a publish may outlive its deadline by the client's read timeout")
	} else if _, ok := b.rdb.(*redis.ClusterClient); ok {
		b.topo = cluster
	}
	if cc, ok := b.rdb.(*redis.ClusterClient); ok {
		if b.cluster == nil {
			b.cluster = cc.Options()
			for _, a := range b.cluster.Addrs {
				b.seeds = append(b.seeds, b.nodeClient(a, 1))
			}
		}
		b.recentCap = recentFailover
	}
	b.libName, b.publishFn, b.readFn, b.touchFn, b.code = library(b.prefix, size, ttl, keyMs, b.cluster != nil)
	if err := b.load(ctx); err != nil {
		if isServerError(err) {
			if b.ownClient {
				b.rdb.Close()
			}
			for _, c := range b.seeds {
				c.Close()
			}
			if strings.HasPrefix(err.Error(), "READONLY") {
				return nil, fmt.Errorf("redisbroker: loading function library %q: %w (the client talks to a replica: herald needs the primary; no ReplicaOnly)", b.libName, err)
			}
			return nil, fmt.Errorf("redisbroker: loading function library %q: %w", b.libName, err)
		}
		b.log.Warn("redisbroker: Redis is unreachable; starting anyway", "err", err)
	}

	b.ctx, b.cancel = context.WithCancel(context.Background())
	if b.cluster == nil {
		b.single = b.newShard("", nil)
		b.single.start()
	} else {
		b.wg.Add(1)
		go b.routeLoop()
	}
	b.wg.Add(workers)
	if b.failover != nil {
		b.wg.Add(1)
		go b.roleLoop()
	}
	for range workers {
		go b.worker()
	}
	return b, nil
}

// Connected reports whether the broker's pub/sub connection to Redis
// currently works (it answered within about a second).
func (b *Broker) Connected() bool { return b.up.Load() }

// Reconnects returns how many times a replacement pub/sub connection
// started working: after the previous one failed or stopped answering
// (see Config.OnReconnect). A long outage counts once, when Redis is back.
func (b *Broker) Reconnects() int64 { return b.reconns.Load() }

// Refilled returns the number of events live subscribers were given from
// the streams after a gap in the pub/sub feed (a replaced connection, a
// lapsed subscription): what the refills recovered.
func (b *Broker) Refilled() int64 { return b.refilled.Load() }

// LastLiveEvent returns when the pub/sub connection last delivered an event
// of a subscribed topic (zero if it never did).
func (b *Broker) LastLiveEvent() time.Time {
	if n := b.lastLive.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// conn returns the current pub/sub connection of the only shard (not in
// Cluster).
func (b *Broker) conn() *psConn { return b.single.conn() }

// updateUp sets the broker's state from its shards': up when every shard's
// connection works (in Cluster, one per primary of the slot map: none
// before the map was read).
func (b *Broker) updateUp(err error) {
	b.upMu.Lock()
	defer b.upMu.Unlock()
	var v bool
	if b.single != nil {
		v = b.single.up.Load()
	} else {
		b.mu.Lock()
		v = len(b.shards) > 0
		for _, s := range b.shards {
			v = v && s.up.Load()
		}
		b.mu.Unlock()
	}
	if b.up.Swap(v) == v {
		return
	}
	if v {
		b.log.Info("redisbroker: connected to Redis")
	} else {
		b.log.Warn("redisbroker: Redis connection lost; publishing fails and streams wait until it is back", "err", err)
	}
	if b.onState != nil {
		b.onState(v)
	}
}

func (b *Broker) channel(topic string) string { return b.prefix + ":{" + topic + "}" }

// Close implements broker.Broker. It ends every subscription with
// broker.ErrClosed, stops the broker's goroutines and closes the Redis
// client if the broker created it. It is idempotent.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.isClosed.Store(true)
	subs := make([]*subscription, 0, len(b.subs))
	for s := range b.subs {
		subs = append(subs, s)
	}
	b.mu.Unlock()
	for _, s := range subs {
		s.End(broker.ErrClosed)
	}
	b.cancel()
	b.mu.Lock()
	shards := make([]*shard, 0, len(b.shards)+1)
	for _, s := range b.shards {
		shards = append(shards, s)
	}
	if b.single != nil {
		shards = append(shards, b.single)
	}
	b.mu.Unlock()
	b.wg.Wait() // routeLoop starts no shard once ctx is done
	for _, s := range shards {
		s.stop()
	}
	for _, c := range b.seeds {
		_ = c.Close()
	}
	var err error
	if b.ownClient {
		err = b.rdb.Close()
	}
	if errors.Is(err, redis.ErrClosed) {
		err = nil
	}
	return err
}
