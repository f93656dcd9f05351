// Package faultproxy puts Shopify's toxiproxy, running in the test's own
// process, between a client and a TCP server (Redis, usually), so a test can
// break the connection in the ways real networks do: blackhole it (bytes
// vanish, no RST — a crashed host or a failover behind a stable address),
// add latency, limit bandwidth, reset it.
//
// Proxy is one toxiproxy proxy in front of one upstream address. Switch is
// two proxies in front of the same upstream plus a dialer that dials
// whichever is current: Switch.Flip blackholes every connection open now
// while new connections pass, which one proxy alone cannot do (a toxic
// applies to the proxy's existing and future connections alike).
//
//	sw := faultproxy.NewSwitch(t, redisAddr)
//	c := redis.NewClient(&redis.Options{Addr: "redis", Dialer: sw.Dial})
//	...
//	sw.Flip() // open connections go deaf, new ones reach Redis
//
// Everything is stopped at the test's cleanup; toxiproxy logs nothing.
package faultproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"sync"
	"testing"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
	zlog "github.com/rs/zerolog/log"
)

// Directions a toxic applies to, as toxiproxy names them: Upstream is
// client to server, Downstream server to client.
const (
	Upstream   = "upstream"
	Downstream = "downstream"
)

// Proxy is an in-process toxiproxy proxy listening on a loopback port and
// forwarding to one upstream address. Its methods are safe for concurrent
// use.
type Proxy struct {
	p    *toxiproxy.Proxy
	addr string // p.Listen once started: toxiproxy rewrites that field on every restart
}

var (
	srvOnce sync.Once
	srv     *toxiproxy.ApiServer
)

// server is the toxiproxy server every Proxy belongs to; its HTTP API is
// never started.
func server() *toxiproxy.ApiServer {
	srvOnce.Do(func() {
		// Some toxics (bandwidth) log through zerolog's global logger,
		// at trace level, to stderr: silence it before any proxy runs.
		zlog.Logger = zerolog.Nop()
		srv = toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	})
	return srv
}

var seq struct {
	sync.Mutex
	n int
}

// New starts a proxy to upstream (host:port) on 127.0.0.1 and stops it,
// closing every connection through it, at t's cleanup.
func New(t testing.TB, upstream string) *Proxy {
	t.Helper()
	seq.Lock()
	seq.n++
	name := fmt.Sprintf("faultproxy-%d", seq.n)
	seq.Unlock()
	nop := zerolog.Nop()
	p := toxiproxy.NewProxy(server(), name, "127.0.0.1:0", upstream)
	p.Logger = &nop
	if err := p.Start(); err != nil {
		t.Fatalf("faultproxy: start proxy to %s: %v", upstream, err)
	}
	t.Cleanup(p.Stop)
	return &Proxy{p: p, addr: p.Listen}
}

// Addr is the proxy's listening address (127.0.0.1:port).
func (p *Proxy) Addr() string { return p.addr }

// Upstream is the address the proxy forwards to.
func (p *Proxy) Upstream() string { return p.p.Upstream }

// AddToxic adds a toxic (see toxiproxy's README for types and attributes:
// "latency" {latency, jitter} ms, "bandwidth" {rate} KB/s, "timeout"
// {timeout} ms, "reset_peer" {timeout} ms, "slow_close" {delay} ms,
// "limit_data" {bytes}, "slicer" ...) to one direction (Upstream or
// Downstream) of every connection, open or future, with toxicity 1. The
// name must be unique on the proxy; "" names it <type>_<stream>.
func (p *Proxy) AddToxic(name, typ, stream string, attrs map[string]any) error {
	body, err := json.Marshal(map[string]any{
		"name": name, "type": typ, "stream": stream, "toxicity": 1.0, "attributes": attrs,
	})
	if err != nil {
		return err
	}
	if _, err := p.p.Toxics.AddToxicJson(bytes.NewReader(body)); err != nil {
		return fmt.Errorf("faultproxy: add toxic %s %q: %w", typ, name, err)
	}
	return nil
}

// RemoveToxic removes the named toxic.
func (p *Proxy) RemoveToxic(name string) error {
	if err := p.p.Toxics.RemoveToxic(context.Background(), name); err != nil {
		return fmt.Errorf("faultproxy: remove toxic %q: %w", name, err)
	}
	return nil
}

// Clear removes every toxic.
func (p *Proxy) Clear() { p.p.Toxics.ResetToxics(context.Background()) }

// Names of the toxics Blackhole adds.
const (
	blackholeUp   = "faultproxy_blackhole_up"
	blackholeDown = "faultproxy_blackhole_down"
)

// Blackhole makes every connection through the proxy, open or future,
// swallow all bytes in both directions without closing anything: the
// client's writes succeed, nothing is ever answered (a "timeout" toxic
// with timeout 0). New connections are still accepted. Undo it with
// Clear; bytes swallowed meanwhile are lost, so a connection that lived
// through a blackhole is desynchronised and should be discarded.
func (p *Proxy) Blackhole() error {
	if err := p.AddToxic(blackholeUp, "timeout", Upstream, map[string]any{"timeout": 0}); err != nil {
		return err
	}
	return p.AddToxic(blackholeDown, "timeout", Downstream, map[string]any{"timeout": 0})
}

// CloseConnections closes every connection open through the proxy (a FIN
// to both sides, like a proxy restart) and keeps accepting new ones.
func (p *Proxy) CloseConnections() error {
	p.p.Stop()
	if err := p.p.Start(); err != nil {
		return fmt.Errorf("faultproxy: restart proxy on %s: %w", p.p.Listen, err)
	}
	return nil
}

// Dialer is a dial function in the shape of go-redis's Options.Dialer and
// net.Dialer.DialContext.
type Dialer func(ctx context.Context, network, addr string) (net.Conn, error)

// Switch is two proxies in front of the same upstream and a dialer that
// dials the current one, whatever address it is asked for. Flip turns "the
// network path of every open connection died, a new path works" into one
// call. Its methods are safe for concurrent use.
type Switch struct {
	proxies [2]*Proxy
	base    Dialer

	mu    sync.Mutex
	cur   int
	flips int
}

// NewSwitch starts two proxies to upstream and a Switch whose Dial dials
// the first. Both are stopped at t's cleanup.
func NewSwitch(t testing.TB, upstream string) *Switch {
	t.Helper()
	return &Switch{proxies: [2]*Proxy{New(t, upstream), New(t, upstream)}}
}

// WithBase makes Dial use base (for example the dialer of the code under
// test, to keep its socket options) instead of a plain net.Dialer. Call it
// before the first Dial.
func (s *Switch) WithBase(base Dialer) *Switch {
	s.base = base
	return s
}

// Dial dials the current proxy; addr is ignored. Use it as go-redis's
// Options.Dialer.
func (s *Switch) Dial(ctx context.Context, network, _ string) (net.Conn, error) {
	addr := s.Current().Addr()
	if s.base != nil {
		return s.base(ctx, network, addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

// Current is the proxy new connections go through.
func (s *Switch) Current() *Proxy {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proxies[s.cur]
}

// Flips is the number of Flip calls so far.
func (s *Switch) Flips() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.flips
}

// Flip blackholes the current proxy — every connection open through it
// goes deaf, no RST — and makes the other proxy current, first closing
// what is left of the connections it held and clearing its toxics, so new
// connections reach the upstream.
func (s *Switch) Flip() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, next := s.proxies[s.cur], s.proxies[1-s.cur]
	if err := next.CloseConnections(); err != nil {
		return err
	}
	next.Clear()
	if err := old.Blackhole(); err != nil {
		return err
	}
	s.cur = 1 - s.cur
	s.flips++
	return nil
}
