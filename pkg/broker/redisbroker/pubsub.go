package redisbroker

import (
	"context"
	"crypto/tls"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sys/unix"
)

// Health of the pub/sub connection and of every connection the broker's own
// client dials.
const (
	// answerTimeout: a command on the pub/sub connection (PING, SUBSCRIBE,
	// UNSUBSCRIBE) unanswered this long means the connection is deaf — its
	// path died without a RST, or Redis stopped reading it — and it is
	// replaced. A dead connection is noticed within pingInterval +
	// answerTimeout (2 s), and its replacement is subscribed and the topics
	// refilled a few round trips later.
	answerTimeout = time.Second

	// TCP keepalive and TCP_USER_TIMEOUT of the connections the broker
	// dials: a peer that vanished (no RST) fails a blocked read after
	// about keepAliveIdle + keepAliveCount*keepAliveInterval of silence,
	// and a write that stays unacknowledged for tcpUserTimeout fails the
	// connection — instead of the kernel's 15 minutes of retransmissions.
	keepAliveIdle     = 5 * time.Second
	keepAliveInterval = 2 * time.Second
	keepAliveCount    = 3
	tcpUserTimeout    = 10 * time.Second

	// Defaults for the client built from Config.URL when the URL does not
	// set them.
	defaultDialTimeout  = 2 * time.Second
	defaultReadTimeout  = 3 * time.Second
	defaultDialAttempts = 2
)

// Reasons passed to Config.OnReconnect: why the previous pub/sub
// connection was given up.
const (
	// ReconnectUnanswered: it stopped answering (missed pongs): a dead
	// path without a RST, a failover behind a stable address, a paused or
	// stuck Redis.
	ReconnectUnanswered = "unanswered"
	// ReconnectError: it failed (reset, EOF, a failed write, a reply
	// out of sequence).
	ReconnectError = "error"
	// ReconnectDemoted: with Sentinel, the server it is connected to is
	// no longer the primary (ROLE says replica, or the sentinels name
	// another): a demoted primary keeps its pub/sub clients and sends no
	// redirect, so the broker checks every roleInterval.
	ReconnectDemoted = "demoted"
)

// NewDialer returns a dial function for go-redis's Options.Dialer that
// sets TCP keepalive and TCP_USER_TIMEOUT (Linux) on every TCP connection,
// so a Redis host that dies without a RST fails blocked reads and writes
// in seconds, and that honours opt.DialTimeout and opt.TLSConfig as
// go-redis's default dialer does. The broker uses it for the client it
// builds from Config.URL; give it to a client of your own the same way:
//
//	opt.Dialer = redisbroker.NewDialer(opt)
func NewDialer(opt *redis.Options) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return newDialer(opt.DialTimeout, opt.TLSConfig)
}

func newDialer(timeout time.Duration, tlsConfig *tls.Config) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if timeout == 0 {
		timeout = defaultDialTimeout
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := &net.Dialer{
			Timeout: timeout,
			KeepAliveConfig: net.KeepAliveConfig{
				Enable: true, Idle: keepAliveIdle, Interval: keepAliveInterval, Count: keepAliveCount,
			},
			Control: setUserTimeout,
		}
		if tlsConfig == nil {
			return d.DialContext(ctx, network, addr)
		}
		td := &tls.Dialer{NetDialer: d, Config: tlsConfig}
		return td.DialContext(ctx, network, addr)
	}
}

// setUserTimeout sets TCP_USER_TIMEOUT on TCP sockets.
func setUserTimeout(network, _ string, c syscall.RawConn) error {
	if !strings.HasPrefix(network, "tcp") {
		return nil
	}
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(tcpUserTimeout.Milliseconds()))
	})
	if err != nil {
		return err
	}
	return serr
}

// clientOptions parses a Config.URL into the options of the broker's own
// client.
func clientOptions(url string) (*redis.Options, error) {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil, err
	}
	applyDefaults(&opt.MaxRetries, &opt.ContextTimeoutEnabled, &opt.DialTimeout, &opt.ReadTimeout, &opt.DialerRetries)
	opt.Dialer = NewDialer(opt)
	return opt, nil
}

// psConn is one pub/sub connection — a go-redis PubSub, which the broker
// never lets reconnect on its own (a broken one is replaced) — and the
// commands written on it whose replies have not been read yet, in the
// order they were written: Redis answers in that order, so an error reply
// belongs to the oldest, and an unanswered one tells that the connection
// is deaf.
type psConn struct {
	ps      *redis.PubSub
	gen     uint64          // 0 for the first connection, +1 per replacement
	sharded bool            // SSUBSCRIBE / SUNSUBSCRIBE (Redis Cluster)
	ctx     context.Context // of every command on ps: the dialer records the node it reached (see connSet.wrap)

	node atomic.Pointer[string] // address of the server ps is connected to; nil until dialed (own client only)

	mu      sync.Mutex // guards the fields below; held across each write, so pending follows write order
	pending []psCmd
	broken  error // a write failed: replace
}

type psCmd struct {
	kind     string   // "ping", "subscribe", "unsubscribe"
	channels []string // subscribe: exactly one
	left     int      // replies still expected
	sent     time.Time
}

func (c *psConn) write(kind string, channels []string, do func() error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken != nil {
		return c.broken
	}
	c.pending = append(c.pending, psCmd{kind: kind, channels: channels, left: max(1, len(channels)), sent: time.Now()})
	if err := do(); err != nil {
		c.broken = err
		return err
	}
	return nil
}

func (c *psConn) ping() error {
	return c.write("ping", nil, func() error { return c.ps.Ping(c.ctx) })
}

func (c *psConn) subscribe(channel string) error {
	return c.write("subscribe", []string{channel}, func() error {
		if c.sharded {
			return c.ps.SSubscribe(c.ctx, channel)
		}
		return c.ps.Subscribe(c.ctx, channel)
	})
}

func (c *psConn) unsubscribe(channels []string) error {
	return c.write("unsubscribe", channels, func() error {
		if c.sharded {
			return c.ps.SUnsubscribe(c.ctx, channels...)
		}
		return c.ps.Unsubscribe(c.ctx, channels...)
	})
}

// fail marks the connection broken with err: receiveLoop replaces it. It
// reports whether the connection was working until then.
func (c *psConn) fail(err error) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken != nil {
		return false
	}
	c.broken = err
	return true
}

// psConnKey is the context key under which a pub/sub connection's commands
// carry it to the dialer.
type psConnKey struct{}

// state reports whether a command is waiting for its reply and since when
// the oldest one has been, and the error of a failed write (nil if none).
func (c *psConn) state() (waiting bool, since time.Time, broken error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.pending) > 0 {
		return true, c.pending[0].sent, c.broken
	}
	return false, time.Time{}, c.broken
}

// answered consumes the reply of kind (and channel) for the oldest pending
// command; false means the reply does not match it: the connection is out
// of step with the broker's view (go-redis resubscribed behind its back).
func (c *psConn) answered(kind, channel string) bool {
	switch kind {
	case "ssubscribe":
		kind = "subscribe"
	case "sunsubscribe":
		kind = "unsubscribe"
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.pending) == 0 {
		return false
	}
	p := &c.pending[0]
	if p.kind != kind || kind != "ping" && !slices.Contains(p.channels, channel) {
		return false
	}
	if p.left--; p.left == 0 {
		c.pending[0] = psCmd{}
		c.pending = c.pending[1:]
	}
	return true
}

// failed consumes an error reply: it answers the oldest pending command,
// which it returns.
func (c *psConn) failed() (psCmd, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.pending) == 0 {
		return psCmd{}, false
	}
	p := c.pending[0]
	c.pending[0] = psCmd{}
	c.pending = c.pending[1:]
	return p, true
}

// connSet records the live connections of the client the broker built, so
// that when the pub/sub connection turns out deaf the pool's connections
// dialed before it — deaf too, most likely: same host, same path — are
// closed at once rather than each costing a command (a refill's read, a
// publish) its full timeout before go-redis drops it. Closing one in use
// fails its command, which was waiting on a dead connection anyway.
type connSet struct {
	mu    sync.Mutex
	conns map[*trackedConn]struct{}
}

func (s *connSet) wrap(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if ps, ok := ctx.Value(psConnKey{}).(*psConn); ok {
			// The pub/sub connection's: remember which server it reached
			// (with Sentinel, the primary of the moment, as the sentinels
			// name it).
			ps.node.Store(&addr)
		}
		tc := &trackedConn{Conn: c, set: s, addr: addr, born: time.Now()}
		s.mu.Lock()
		if s.conns == nil {
			s.conns = make(map[*trackedConn]struct{})
		}
		s.conns[tc] = struct{}{}
		s.mu.Unlock()
		if _, ok := c.(syscall.Conn); ok {
			// go-redis's pool health check reads the socket through it.
			return &trackedSysConn{tc}, nil
		}
		return tc, nil
	}
}

// closeBefore closes every connection to addr ("": to any server) dialed
// before t and reports how many.
func (s *connSet) closeBefore(t time.Time, addr string) int {
	var old []*trackedConn
	s.mu.Lock()
	for c := range s.conns {
		if c.born.Before(t) && (addr == "" || c.addr == addr) {
			old = append(old, c)
		}
	}
	s.mu.Unlock()
	for _, c := range old {
		_ = c.Close()
	}
	return len(old)
}

type trackedConn struct {
	net.Conn
	set  *connSet
	addr string // as dialed
	born time.Time
}

func (c *trackedConn) Close() error {
	c.set.mu.Lock()
	delete(c.set.conns, c)
	c.set.mu.Unlock()
	return c.Conn.Close()
}

// NetConn lets go-redis reach the transport under a TLS connection.
func (c *trackedConn) NetConn() net.Conn { return c.Conn }

type trackedSysConn struct{ *trackedConn }

func (c *trackedSysConn) SyscallConn() (syscall.RawConn, error) {
	return c.Conn.(syscall.Conn).SyscallConn()
}
