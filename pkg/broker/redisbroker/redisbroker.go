// Package redisbroker is the Broker of a herald fleet: every replica runs one
// against the same Redis, and every replica serves the same ordered stream
// of each topic.
//
// Data path: Publish (or FCALL <prefix>_publish from any service) appends
// the event to the topic's Redis stream and publishes it on the topic's
// channel in one atomic Redis Function call. Each Broker holds one pub/sub
// connection, subscribed once per topic that has local subscribers
// (reference-counted), decodes each event once and fans it out to the local
// subscriptions' queues. The stream is the source of truth, pub/sub only the
// wake-up: a new subscription is served from the stream and then live; when
// the pub/sub connection drops and comes back, every active topic is
// refilled from its stream before live delivery resumes.
//
// # Keys
//
// For prefix P (default "herald") and topic T:
//
//	P:{T}:s   stream: one entry per event, fields t (type) and d (data)
//	P:{T}:e   epoch: a token that changes when the stream was lost
//	P:{T}     pub/sub channel: "<id>\n<type>\n<data>" per event
//	P:{T}:k:K idempotency record of key K: "<id> <sha1 of type LF data>",
//	          expiring after Config.IdempotencyWindow
//
// One topic's keys share the hash tag {T}, hence one Redis Cluster slot.
// The function library is named "herald" ("herald_P" for another prefix)
// and defines P_publish and P_read (herald_publish, herald_read by default).
//
// # Publishing from another service
//
//	FCALL herald_publish 1 <topic> <event-type> <data> [<idempotency-key>]
//
// returns the event ID: for a key seen within the window, the first
// publish's ID; for a key seen with other content, the error reply
// "ERR herald: idempotency key conflict: ...". The key argument is the
// topic name; the library is generated with the prefix and the history settings baked in, so the
// caller needs nothing else. An empty event type means the default
// "message". A topic containing '{' or '}' works on a standalone Redis but
// not in Redis Cluster (its name then hashes elsewhere than its keys).
//
// # Event IDs and cursors
//
// An ID is <epoch>-<ms>-<seq>: the topic's epoch (base-36 microseconds of
// the first publish after the stream was created or lost) and the stream
// entry ID that XADD assigned, so every replica reports the same ID and
// Event.Time is the entry's millisecond time. The position of a topic that
// has never been published to is "0-0-0".
//
// A cursor the broker cannot place yields a KindReset then a KindPosition
// just before the oldest retained entry and all retained history:
// ReasonEpoch for another epoch (Redis lost the stream: restart without
// persistence, failover, the stream key deleted or evicted — run Redis
// with maxmemory-policy noeviction, as an evicted stream is lost history),
// ReasonTruncated when entries after the cursor
// were trimmed, ReasonUnknown for anything unparseable or ahead of the
// stream. A live subscriber whose topic loses its stream receives the same
// reset, mid-stream, followed by the new epoch's events.
//
// # Redis unavailable
//
// Publish fails with an error wrapping broker.ErrUnavailable. Subscribe
// still succeeds: the subscription is registered locally and starts (its
// KindPosition, then events) once Redis answers again. See Subscribe for
// where a live-from-now subscription starts when the head cannot be read.
// Connected and Config.OnStateChange report the pub/sub connection's state.
//
// # Redis Sentinel
//
// With a Sentinel URL (see Config.URL) the broker's client asks the
// sentinels for the primary on every dial, and the broker checks every
// second that its pub/sub connection is on the primary (a demoted primary
// keeps its pub/sub clients and sends no redirect); when it is not, the
// connection is replaced (ReconnectDemoted) and every topic refilled.
// Publishes during a failover fail fast with broker.ErrUnavailable.
// Replication is asynchronous: a failover can lose the last acknowledged
// events. A live subscriber that received events its topic's stream no
// longer has gets a KindReset with broker.ReasonFailover at the refill,
// then the retained history; Config.WaitReplicas makes acknowledged
// events survive a failover instead. Redis Cluster is not supported yet
// (Config.Cluster).
package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-sse/herald/pkg/broker"
	"github.com/redis/go-redis/v9"
)

// Defaults of Config.
const (
	DefaultPrefix      = "herald"
	DefaultHistorySize = 1000
	DefaultWaitTimeout = time.Second
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

// Config configures a Broker. Only URL or Client is required.
type Config struct {
	// URL of the Redis server, in the form redis.ParseURL accepts:
	// redis://[[user]:password@]host[:port][/db], rediss:// for TLS; or,
	// with a master_name parameter, of Redis Sentinel, in the form
	// redis.ParseFailoverURL accepts:
	// redis://[[user]:password@]sentinel1:26379?master_name=M&addr=sentinel2:26379...
	// (the host and every addr are sentinels; the URL's user and password
	// are the sentinels', the primary's are the username= and password=
	// parameters); or, with Cluster, of Redis Cluster (see Cluster).
	// New asks the servers what they are: a Sentinel or a Cluster node
	// behind a standalone URL, a master name the sentinels do not know, or
	// a standalone server with Cluster, fail New with an error wrapping
	// ErrTopology.
	// Ignored when Client is set. The Broker closes the client it creates.
	// That client never retries a command (MaxRetries -1, whatever the
	// URL's max_retries): see Client. It honours ctx deadlines
	// (ContextTimeoutEnabled), dials with NewDialer (TCP keepalive and
	// TCP_USER_TIMEOUT), and unless the URL says otherwise uses a dial
	// timeout of 2 s, read and write timeouts of 3 s and 2 dial attempts.
	URL string
	// Cluster says that URL names Redis Cluster nodes, in the form
	// redis.ParseClusterURL accepts: redis://node1:6379?addr=node2:6379...
	// Not supported yet: New checks the nodes (a standalone server fails
	// it with ErrTopology) and fails with ErrClusterUnsupported.
	Cluster bool
	// WaitReplicas, if positive, makes every publish durable on that many
	// replicas before it is acknowledged: WAIT WaitReplicas WaitTimeout is
	// pipelined after the FCALL on the same connection, and a publish
	// whose WAIT counts fewer replicas fails with an error wrapping
	// broker.ErrUnavailable and ErrNotReplicated (the event was appended
	// on the primary and may or may not survive a failover; a retry with
	// the same idempotency key is safe). Default 0: acknowledged once the
	// primary ran it (asynchronous replication: a failover may lose the
	// last acknowledged events; see ReasonFailover).
	WaitReplicas int
	// WaitTimeout bounds each WAIT (with WaitReplicas). Default
	// DefaultWaitTimeout; it is added to the publish's time, so keep it
	// well below the publisher's deadline.
	WaitTimeout time.Duration
	// Client, if set, is used instead of URL; Close does not close it.
	// Standalone and Sentinel clients are supported; with a Cluster client
	// every replica's pub/sub connection lands on one node.
	//
	// Give it MaxRetries: -1 (redis.Options, FailoverOptions,
	// ClusterOptions, UniversalOptions). With go-redis's default of 3
	// retries, a publish whose reply was lost (connection reset, EOF, read
	// timeout after Redis ran the FCALL) is sent again and the event is
	// appended twice, under two IDs: every subscriber gets a duplicate.
	//
	// Every command must reach the primary: replays are read with FCALL,
	// never FCALL_RO, so a client that routes read-only commands to
	// replicas (ClusterOptions.ReadOnly, RouteByLatency, RouteRandomly)
	// still reads the primary's history — a replica's lags behind the
	// primary's pub/sub, and a replay from it would skip events. A client
	// that sends everything to replicas (FailoverOptions.ReplicaOnly) is
	// refused: New fails when the library load is answered READONLY.
	//
	// Give it ContextTimeoutEnabled: true too, or a Publish waits for the
	// client's ReadTimeout rather than its ctx's deadline; and Dialer:
	// NewDialer(opt), or a Redis host that dies without a RST blocks the
	// client's pool connections until the kernel gives up (minutes). The
	// pub/sub connection is replaced by the broker itself when it stops
	// answering, whatever the client.
	Client redis.UniversalClient
	// Prefix of every key, channel and function name: 1-64 letters, digits
	// or '_'. Default "herald". Deployments sharing one Redis use different
	// prefixes.
	Prefix string
	// HistorySize is the number of events kept per topic, approximately
	// (XADD MAXLEN ~: Redis trims whole nodes of about 100 entries, so a
	// little more is kept). Default DefaultHistorySize; negative keeps no
	// history (every cursor but the head then gets a ReasonTruncated
	// reset), as in membroker. Every replica of a deployment must use the
	// same value: it is baked into the function library, and the last
	// loader wins.
	HistorySize int
	// HistoryTTL, if positive, also trims events older than this
	// (XTRIM MINID ~, at each publish, millisecond resolution). Default 0:
	// no age limit. Same rule as HistorySize across replicas.
	HistoryTTL time.Duration
	// IdempotencyWindow is how long Redis remembers a publish's
	// idempotency key (broker.Message.Key, or the fourth argument of
	// FCALL <prefix>_publish): a second publish to the topic with the same
	// key within it appends nothing and returns the first publish's ID, on
	// every replica. The record is one Redis string per key,
	// P:{T}:k:<key>, written in the same function call as the event and
	// expiring after the window: about 150 bytes plus the lengths of the
	// topic and the key (Redis MEMORY USAGE: 184 bytes for a 10-byte topic
	// and a UUID; at most 200 bytes plus 1.25 times the record's name, see
	// TestKeyRecordMemory). 0 means
	// broker.DefaultIdempotencyWindow (5 minutes); negative turns keys off
	// (a publish with a key is then an ordinary publish). Same rule as
	// HistorySize across replicas.
	IdempotencyWindow time.Duration
	// QueueLimit is the number of pending items a subscriber may fall
	// behind before it is disconnected with broker.ErrSlowConsumer.
	// Default broker.DefaultQueueLimit.
	QueueLimit int
	// Logger receives connectivity changes and errors. Default
	// slog.Default().
	Logger *slog.Logger
	// OnStateChange, if set, is called with true when the pub/sub
	// connection to Redis works again and false when it broke or stopped
	// answering, from the broker's receive goroutine (keep it fast). Use it
	// for metrics; Connected reports the same state.
	OnStateChange func(up bool)
	// OnReconnect, if set, is called each time a replacement pub/sub
	// connection answers for the first time, with the reason the previous
	// one was given up (ReconnectUnanswered, ReconnectError), from the
	// receive goroutine (keep it fast). Reconnects counts the same events.
	OnReconnect func(reason string)

	// wrapDial, if set (tests), wraps the dialer of the client built from
	// URL: a fault proxy's switch keeps the broker's socket options.
	wrapDial func(dialFunc) dialFunc
	// recentIDs, if set (tests), is Broker.recentCap whatever the topology.
	recentIDs int
}

type dialFunc = func(ctx context.Context, network, addr string) (net.Conn, error)

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

	psMu sync.Mutex // guards psc
	psc  *psConn    // the current pub/sub connection; replaced by receiveLoop only

	reconcileCh chan struct{} // cap 1: channel subscriptions may differ from topics
	workCh      chan struct{} // cap workers: work was queued

	mu        sync.Mutex // guards the fields below; taken before any topic.mu
	closed    bool
	topics    map[string]*topic // by channel
	confirmed map[string]bool   // channel subscribed on the current pub/sub connection
	subs      map[*subscription]struct{}
	retry     map[string]bool // channels to SUBSCRIBE again (after a transient error)
	subFails  map[string]int  // channel -> SUBSCRIBEs refused in a row (transient errors)

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
		rdb:         cfg.Client,
		prefix:      cfg.Prefix,
		queueLimit:  cfg.QueueLimit,
		log:         cfg.Logger,
		onState:     cfg.OnStateChange,
		onReconn:    cfg.OnReconnect,
		reconcileCh: make(chan struct{}, 1),
		workCh:      make(chan struct{}, workers),
		topics:      make(map[string]*topic),
		confirmed:   make(map[string]bool),
		subs:        make(map[*subscription]struct{}),
		retry:       make(map[string]bool),
		subFails:    make(map[string]int),
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
	if err := validPrefix(b.prefix); err != nil {
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
	b.libName, b.publishFn, b.readFn, b.touchFn, b.code = library(b.prefix, size, ttl, keyMs)
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
			return nil, checkCluster(ctx, cfg.URL)
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
	}
	if err := b.load(ctx); err != nil {
		if isServerError(err) {
			if b.ownClient {
				b.rdb.Close()
			}
			if strings.HasPrefix(err.Error(), "READONLY") {
				return nil, fmt.Errorf("redisbroker: loading function library %q: %w (the client talks to a replica: herald needs the primary; no ReplicaOnly)", b.libName, err)
			}
			return nil, fmt.Errorf("redisbroker: loading function library %q: %w", b.libName, err)
		}
		b.log.Warn("redisbroker: Redis is unreachable; starting anyway", "err", err)
	}

	if cfg.recentIDs > 0 {
		b.recentCap = cfg.recentIDs
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.psc = b.newPSConn(0) // no channel yet: connects on first use
	b.wg.Add(2 + workers)
	go b.receiveLoop()
	go b.reconcileLoop()
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

// conn returns the current pub/sub connection.
func (b *Broker) conn() *psConn {
	b.psMu.Lock()
	defer b.psMu.Unlock()
	return b.psc
}

func (b *Broker) setUp(v bool, err error) {
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

// Publish implements broker.Broker: one FCALL <prefix>_publish, in a
// pipeline with other publishes when some are waiting (see pipeline.go). With
// msg.Key, a retry within Config.IdempotencyWindow returns the first ID and
// appends nothing. Errors that mean Redis could not be reached or did not
// answer in time (including ctx's deadline) wrap broker.ErrUnavailable;
// such a publish may still have been applied (Redis ran it but its reply
// was lost), so a publisher that retries without a key may publish an
// event twice, under two IDs. The client the broker
// creates from Config.URL never sends it again by itself; see Config.Client
// for a client of the caller's.
func (b *Broker) Publish(ctx context.Context, topic string, msg broker.Message) (string, error) {
	if err := validate(topic, msg); err != nil {
		return "", err
	}
	if b.isClosed.Load() {
		return "", broker.ErrClosed
	}
	g := &pubGroup{ctx: ctx}
	g.one[0] = pubCall{topic: topic, msg: msg}
	g.calls = g.one[:]
	if err := b.submit(g); err != nil {
		return "", b.publishError(err)
	}
	r := g.calls[0].res
	return r.ID, r.Err
}

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
	// receiveLoop installs no connection once ctx is done (see replace):
	// this one is the last.
	err := b.conn().ps.Close()
	b.wg.Wait()
	if b.ownClient {
		if cerr := b.rdb.Close(); err == nil {
			err = cerr
		}
	}
	if errors.Is(err, redis.ErrClosed) {
		err = nil
	}
	return err
}

// reconcileLoop makes the pub/sub connection's channel subscriptions follow
// the set of topics with local subscribers: one SUBSCRIBE per topic (so an
// error reply names its channel), UNSUBSCRIBE when its last subscriber
// leaves. On a new connection (see receiveLoop) it subscribes every topic
// again. A failed write marks the connection broken; receiveLoop replaces
// it and signals this loop again.
func (b *Broker) reconcileLoop() {
	defer b.wg.Done()
	issued := make(map[string]bool) // channels subscribed on c
	var c *psConn
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-b.reconcileCh:
		}
		if cur := b.conn(); cur != c {
			c = cur
			clear(issued)
		}
		var add, del []string
		b.mu.Lock()
		for ch := range b.retry {
			delete(issued, ch)
		}
		clear(b.retry)
		for ch := range b.topics {
			if !issued[ch] {
				add = append(add, ch)
			}
		}
		for ch := range issued {
			if b.topics[ch] == nil {
				del = append(del, ch)
			}
		}
		b.mu.Unlock()
		if len(del) > 0 {
			for _, ch := range del {
				delete(issued, ch)
			}
			if err := c.unsubscribe(del); err != nil && b.ctx.Err() == nil {
				b.log.Debug("redisbroker: unsubscribe", "channels", len(del), "err", err)
			}
		}
		for _, ch := range add {
			issued[ch] = true
			if err := c.subscribe(ch); err != nil {
				if b.ctx.Err() == nil {
					b.log.Debug("redisbroker: subscribe", "channel", ch, "err", err)
				}
				break // the connection is broken: its replacement subscribes all
			}
		}
	}
}

func (b *Broker) signalReconcile() {
	select {
	case b.reconcileCh <- struct{}{}:
	default:
	}
}

// receiveLoop reads the pub/sub connection: confirmations, events, pongs,
// error replies. It pings the connection when it has been silent for
// pingInterval and replaces it (see replace) when a command on it stays
// unanswered for answerTimeout, when a write on it failed, or when reading
// fails. It never does I/O other than reading, pinging and replacing, so
// a slow Redis read elsewhere never delays live events of other topics.
func (b *Broker) receiveLoop() {
	defer b.wg.Done()
	c := b.conn()
	backoff := time.Duration(0)
	reason := ""  // why the last working connection was given up; reported when its successor answers
	fresh := true // c has not answered yet
	_ = c.ping()  // connects now, so Connected turns true quickly
	for {
		if b.ctx.Err() != nil {
			return
		}
		timeout := pingInterval
		waiting, since, broken := c.state()
		if waiting {
			timeout = answerTimeout - time.Since(since)
		}
		switch {
		case broken != nil:
			why := ReconnectError
			if errors.Is(broken, errDemoted) {
				why = ReconnectDemoted
			}
			c, fresh, reason = b.replace(c, fresh, reason, why, broken, &backoff)
			continue
		case timeout <= 0:
			err := fmt.Errorf("redisbroker: pub/sub connection: no answer for %v", answerTimeout)
			c, fresh, reason = b.replace(c, fresh, reason, ReconnectUnanswered, err, &backoff)
			continue
		}
		msg, err := c.ps.ReceiveTimeout(c.ctx, max(timeout, 10*time.Millisecond))
		if b.ctx.Err() != nil {
			return
		}
		if err != nil {
			var ne net.Error
			switch {
			case errors.As(err, &ne) && ne.Timeout():
				if !waiting {
					_ = c.ping()
				}
			case isServerError(err):
				// An error reply, not a disconnect: it answers the oldest
				// command.
				if !b.onErrorReply(c, err) {
					c, fresh, reason = b.replace(c, fresh, reason, ReconnectError, err, &backoff)
				}
			default:
				c, fresh, reason = b.replace(c, fresh, reason, ReconnectError, err, &backoff)
			}
			continue
		}
		inStep := true
		switch m := msg.(type) {
		case *redis.Subscription:
			if inStep = c.answered(m.Kind, m.Channel); inStep {
				b.onSubscription(m)
			}
		case *redis.Pong:
			inStep = c.answered("ping", "")
		case *redis.Message:
			b.onMessage(m.Channel, m.Payload)
		}
		if !inStep {
			err := fmt.Errorf("redisbroker: pub/sub connection: unexpected %v", msg)
			c, fresh, reason = b.replace(c, fresh, reason, ReconnectError, err, &backoff)
			continue
		}
		backoff = 0
		if fresh {
			fresh = false
			if reason != "" {
				b.reconns.Add(1)
				if b.onReconn != nil {
					b.onReconn(reason)
				}
				b.log.Info("redisbroker: pub/sub connection replaced", "after", reason)
				reason = ""
			}
		}
		b.setUp(true, nil)
	}
}

// replace closes the pub/sub connection c and installs a new one: every
// topic is marked unconfirmed (its live subscribers are refilled from the
// stream once the new connection confirms its channel) and reconcileLoop
// subscribes every topic on the new connection. Messages still unread on c
// are never read: the stream refill delivers them. Repeated failures of
// connections that never answered back off up to maxBackoff. It returns
// the new connection, fresh=true, and the reason to report when it answers.
func (b *Broker) replace(c *psConn, fresh bool, reason, why string, err error, backoff *time.Duration) (*psConn, bool, string) {
	b.setUp(false, err)
	if !fresh {
		reason = why
	}
	if fresh {
		// Back off while Redis stays unreachable; a connection that
		// worked is replaced at once.
		if *backoff > 0 {
			t := time.NewTimer(*backoff)
			select {
			case <-b.ctx.Done():
				t.Stop()
				return c, fresh, reason
			case <-t.C:
			}
		}
		*backoff = min(max(2**backoff, 50*time.Millisecond), maxBackoff)
	}
	if !fresh {
		b.log.Warn("redisbroker: replacing the pub/sub connection", "reason", why, "err", err)
	} else {
		b.log.Debug("redisbroker: replacing the pub/sub connection", "reason", why, "err", err)
	}
	if why == ReconnectUnanswered && b.dialed != nil {
		// The pool's connections most likely went deaf with this one.
		if n := b.dialed.closeBefore(time.Now()); n > 0 {
			b.log.Debug("redisbroker: closed the client's connections dialed before the pub/sub connection went deaf", "connections", n)
		}
	}
	next := b.newPSConn(c.gen + 1)
	b.psMu.Lock()
	if b.ctx.Err() != nil {
		// Close is running and closes b.psc: never install another.
		b.psMu.Unlock()
		_ = next.ps.Close()
		return c, fresh, reason
	}
	b.psc = next
	b.psMu.Unlock()
	b.disconnected()
	// Closing takes the PubSub's lock, which a writer may hold for up to a
	// write timeout on a dead connection: not on this goroutine.
	b.wg.Go(func() { _ = c.ps.Close() })
	b.signalReconcile()
	_ = next.ping()
	return next, true, reason
}

// onErrorReply handles an error reply on the pub/sub connection: it
// answers c's oldest command. A refused SUBSCRIBE ends the subscriptions
// of that channel's topic with an error wrapping ErrSubscribeRefused, or,
// for a transient error (LOADING, BUSY...), is issued again after a
// backoff; other topics are not affected. It returns false when no
// command was waiting: the connection is out of step.
func (b *Broker) onErrorReply(c *psConn, err error) bool {
	cmd, ok := c.failed()
	if !ok {
		return false
	}
	if cmd.kind != "subscribe" {
		b.log.Warn("redisbroker: Redis answered "+strings.ToUpper(cmd.kind)+" on the pub/sub connection with an error", "channels", cmd.channels, "err", err)
		return true
	}
	ch := cmd.channels[0]
	b.mu.Lock()
	t := b.topics[ch]
	if t == nil {
		delete(b.subFails, ch)
		b.mu.Unlock()
		return true
	}
	if transientServerError(err.Error()) {
		n := b.subFails[ch] + 1
		b.subFails[ch] = n
		b.mu.Unlock()
		d := min(50*time.Millisecond<<min(n, 10), maxBackoff)
		b.log.Warn("redisbroker: Redis refused SUBSCRIBE for now; retrying", "topic", t.name, "in", d, "err", err)
		time.AfterFunc(d, func() {
			b.mu.Lock()
			if b.topics[ch] == t {
				b.retry[ch] = true
			}
			b.mu.Unlock()
			b.signalReconcile()
		})
		return true
	}
	delete(b.subFails, ch)
	b.mu.Unlock()
	t.mu.Lock()
	var subs []*subscription
	for _, m := range t.live {
		subs = append(subs, m.s)
	}
	for _, m := range t.loading {
		subs = append(subs, m.s)
	}
	t.mu.Unlock()
	b.log.Warn("redisbroker: Redis refused to subscribe to a topic's channel; ending its subscriptions", "topic", t.name, "channel", ch, "subscriptions", len(subs), "err", err)
	end := fmt.Errorf("%w: topic %q (channel %s): %w", ErrSubscribeRefused, t.name, ch, err)
	for _, s := range subs {
		s.End(end) // releasing the last one drops the topic and unsubscribes it
	}
	return true
}

// ErrSubscribeRefused ends the subscriptions of a topic whose channel
// Redis refused to subscribe to (for example an ACL user without the
// channel permission: NOPERM). The error names the topic and carries
// Redis's reply.
var ErrSubscribeRefused = errors.New("redisbroker: Redis refused the subscription")

// disconnected marks every topic unconfirmed: its channel subscription
// lapsed with the connection, events may be lost until the new connection
// confirms it (the confirmation then triggers the refill).
func (b *Broker) disconnected() {
	b.mu.Lock()
	defer b.mu.Unlock()
	clear(b.confirmed)
	for _, t := range b.topics {
		t.mu.Lock()
		t.setConfirmed(false)
		t.mu.Unlock()
	}
}

// setConfirmed records a change of the topic's channel subscription. Live
// subscribers may have missed events either way — the subscription lapsed,
// or it is a resubscription after a reconnect or a lapse — so they are
// refilled from the stream. Call with t.mu held.
func (t *topic) setConfirmed(on bool) {
	t.confirmed = on
	t.inval++
	// What was buffered before is not contiguous with what follows.
	t.lapsed = true
	t.restartBuf()
	if len(t.live) > 0 {
		t.stale = true
	}
}

func (b *Broker) onSubscription(m *redis.Subscription) {
	on := m.Kind == "subscribe"
	if !on && m.Kind != "unsubscribe" {
		return
	}
	b.mu.Lock()
	if on {
		b.confirmed[m.Channel] = true
		delete(b.subFails, m.Channel)
	} else {
		delete(b.confirmed, m.Channel)
	}
	t := b.topics[m.Channel]
	b.mu.Unlock()
	if t == nil {
		return
	}
	t.mu.Lock()
	t.setConfirmed(on)
	work := on && (t.stale || len(t.loading) > 0)
	t.mu.Unlock()
	switch {
	case work:
		b.schedule(t)
	case !on:
		b.signalReconcile()
	}
}

// decodeMessage parses "<id>\n<type>\n<data>".
func decodeMessage(topic, payload string) (item, bool) {
	id, rest, ok1 := strings.Cut(payload, "\n")
	typ, data, ok2 := strings.Cut(rest, "\n")
	if !ok1 || !ok2 {
		return item{}, false
	}
	epoch, sid, ok := parseID(id)
	if !ok {
		return item{}, false
	}
	return item{epoch: epoch, id: sid, ev: &broker.Event{
		Kind: broker.KindEvent, Topic: topic, ID: id, Type: typ, Data: data, Time: timeOf(sid),
	}}, true
}

func (b *Broker) onMessage(channel, payload string) {
	b.mu.Lock()
	t := b.topics[channel]
	b.mu.Unlock()
	if t == nil {
		return
	}
	it, ok := decodeMessage(t.name, payload)
	if !ok {
		b.log.Warn("redisbroker: ignoring malformed message", "channel", channel)
		return
	}
	b.lastLive.Store(time.Now().UnixNano())
	var slow []*subscription
	schedule := false
	t.mu.Lock()
	if t.removed {
		t.mu.Unlock()
		return
	}
	if !t.stale && len(t.live) > 0 && it.epoch != t.epoch {
		// The stream was lost and recreated without this connection
		// noticing: refill (and reset) the live subscribers.
		t.stale = true
		t.inval++
		schedule = true
	}
	if !t.stale && len(t.loading) == 0 && (len(t.buf) > 0 || t.covered) {
		// Not buffering (nothing to load): what was buffered and the
		// cover are not contiguous with what a later round buffers.
		t.restartBuf()
	}
	if t.stale || len(t.loading) > 0 {
		if n := len(t.buf); n > 0 && t.buf[n-1].epoch != it.epoch {
			// A run of buffered events holds one epoch.
			t.restartBuf()
		}
		if len(t.buf) >= bufLimit {
			t.restartBuf()
			t.bufOverflow = true
		} else {
			t.buf = append(t.buf, it)
		}
	}
	if !t.stale && len(t.live) > 0 {
		t.noteDelivered(b.recentCap, it.epoch, it.id)
	}
	if !t.stale {
		for _, m := range t.live {
			if m.pos.less(it.id) {
				m.pos, m.atEvent = it.id, true
				if !m.s.Push(it.ev) {
					slow = append(slow, m.s)
				}
			}
		}
	}
	t.mu.Unlock()
	if schedule {
		b.schedule(t)
	}
	for _, s := range slow {
		s.End(broker.ErrSlowConsumer)
	}
}

// schedule queues a load round for t unless one is queued or running.
func (b *Broker) schedule(t *topic) {
	b.wmu.Lock()
	t.dirty = true
	if !t.queued && !t.running {
		t.queued = true
		b.work = append(b.work, t)
	}
	b.wmu.Unlock()
	select {
	case b.workCh <- struct{}{}:
	default:
	}
}

func (b *Broker) worker() {
	defer b.wg.Done()
	for {
		b.wmu.Lock()
		var t *topic
		if len(b.work) > 0 {
			t = b.work[0]
			b.work[0] = nil
			b.work = b.work[1:]
			t.queued, t.running, t.dirty = false, true, false
		}
		b.wmu.Unlock()
		if t == nil {
			select {
			case <-b.ctx.Done():
				return
			case <-b.workCh:
			}
			continue
		}
		again, err := b.round(t)
		if err != nil && b.ctx.Err() == nil {
			t.failures = min(t.failures+1, 10)
			d := min(50*time.Millisecond<<t.failures, maxBackoff)
			b.log.Debug("redisbroker: loading from stream failed; retrying", "topic", t.name, "in", d, "err", err)
			time.AfterFunc(d, func() { b.schedule(t) })
		} else if err == nil {
			t.failures = 0
		}
		b.wmu.Lock()
		t.running = false
		requeue := (again || t.dirty) && !t.queued
		if requeue {
			t.queued = true
			b.work = append(b.work, t)
		}
		b.wmu.Unlock()
		if requeue {
			select {
			case b.workCh <- struct{}{}:
			default:
			}
		}
	}
}

// Subscribe implements broker.Broker.
//
// A topic missing from from starts at the stream's head, read here with a
// timeout of one second. Subscribe then waits, up to another second, until
// every topic's first items (a KindReset if the cursor cannot be honoured,
// a KindPosition, the replay) are queued, so they are pending when it
// returns; whatever is not ready by then follows asynchronously.
//
// If Redis does not answer the head read in time, Subscribe returns at
// once with a registered subscription whose items start once Redis is
// back. Its live topics then start with the stream's entries stamped at
// most one second (clock-skew tolerance) before Subscribe was called: no
// event published after Subscribe returned is missed, at the cost of
// possibly a few published just before.
func (b *Broker) Subscribe(ctx context.Context, topics []string, from broker.Cursor) (broker.Subscription, error) {
	if err := broker.ValidateTopics(topics); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if b.isClosed.Load() {
		return nil, broker.ErrClosed
	}
	startMs := uint64(max(time.Now().Add(-clockSkew).UnixMilli(), 0))
	cursors := make([]string, len(topics))
	var live []int
	for i, name := range topics {
		cursors[i] = from[name]
		if cursors[i] == "" {
			live = append(live, i)
		}
	}
	timeBased := false
	if len(live) > 0 {
		hctx, cancel := context.WithTimeout(ctx, headTimeout)
		for _, i := range live {
			r, err := b.read(hctx, topics[i], streamID{}, 0)
			if err != nil {
				timeBased = true
				break
			}
			if isNoEpoch(r.epoch) {
				// Before the first event: the position belongs to an
				// epoch all the same (see touch).
				if r.epoch, err = b.touch(hctx, topics[i]); err != nil {
					timeBased = true
					break
				}
				r.last = streamID{}
			}
			cursors[i] = formatID(r.epoch, r.last)
		}
		cancel()
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}

	s := &subscription{b: b, loaded: make(chan struct{})}
	s.Sub = broker.NewSub(b.queueLimit, func() { b.release(s) })
	s.pending.Store(int32(len(topics)))
	var ts []*topic
	newTopic := false
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, broker.ErrClosed
	}
	for i, name := range topics {
		ch := b.channel(name)
		t := b.topics[ch]
		if t == nil {
			t = &topic{name: name, channel: ch, tag: topicTag(name), confirmed: b.confirmed[ch], epoch: noEpoch}
			b.topics[ch] = t
			newTopic = true
		}
		m := &member{s: s, t: t, cursor: cursors[i]}
		if timeBased && from[name] == "" {
			m.cursor, m.timeBased, m.startMs = "", true, startMs
		}
		t.mu.Lock()
		t.loading = append(t.loading, m)
		t.mu.Unlock()
		s.members = append(s.members, m)
		ts = append(ts, t)
	}
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	if newTopic {
		b.signalReconcile()
	}
	for _, t := range ts {
		b.schedule(t)
	}
	s.EndWhenDone(ctx)
	if timeBased {
		return s, nil
	}
	// Redis answered: wait (briefly) for the replay to be queued, so that
	// a consumer finds it pending as soon as Subscribe returns.
	timer := time.NewTimer(headTimeout)
	defer timer.Stop()
	select {
	case <-s.loaded:
	case <-timer.C:
	case <-ctx.Done():
		s.End(ctx.Err())
		return nil, ctx.Err()
	}
	return s, nil
}

// release removes s from its topics; a topic without members is dropped
// and its channel unsubscribed.
func (b *Broker) release(s *subscription) {
	changed := false
	b.mu.Lock()
	delete(b.subs, s)
	for _, m := range s.members {
		t := m.t
		t.mu.Lock()
		if !m.gone {
			m.gone = true
			if m.live {
				last := t.live[len(t.live)-1]
				t.live[m.idx] = last
				last.idx = m.idx
				t.live[len(t.live)-1] = nil
				t.live = t.live[:len(t.live)-1]
			} else if i := slices.Index(t.loading, m); i >= 0 {
				t.loading = slices.Delete(t.loading, i, i+1)
			}
			if len(t.live)+len(t.loading) == 0 && !t.removed {
				t.removed = true
				clear(t.buf)
				t.buf = nil
				delete(b.topics, t.channel)
				delete(b.subFails, t.channel)
				changed = true
			}
		}
		t.mu.Unlock()
	}
	b.mu.Unlock()
	if changed {
		b.signalReconcile()
	}
}

// subscription implements broker.Subscription on a broker.Sub, which
// releases it from the broker when it ends.
type subscription struct {
	*broker.Sub
	b       *Broker
	members []*member     // set before the subscription is published
	pending atomic.Int32  // members whose KindPosition is not queued yet
	loaded  chan struct{} // closed when pending reaches 0
}
