package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// shard is one pub/sub connection (replaced when it fails) and the topics
// whose channels it carries: the only one with a standalone Redis or
// Sentinel; with Redis Cluster one per primary, carrying the shard
// channels of the slots that primary owns (SSUBSCRIBE: a shard channel is
// served by its slot's primary only). Each shard runs its own receive and
// reconcile loops, so a dead primary stalls only its own topics.
type shard struct {
	b       *Broker
	addr    string        // Cluster: the primary's address; "" otherwise
	client  *redis.Client // Cluster: this primary's client for pub/sub and slot map reads; nil: the broker's client
	data    *redis.Client // Cluster: this primary's client for publishes and reads (see primaryFor)
	sharded bool          // SSUBSCRIBE rather than SUBSCRIBE

	ctx    context.Context // ends when the broker closes or the shard is retired
	cancel context.CancelFunc
	wg     sync.WaitGroup // its loops

	up          atomic.Bool
	psMu        sync.Mutex // guards psc
	psc         *psConn    // replaced by receiveLoop only
	reconcileCh chan struct{}

	// Guarded by Broker.mu.
	confirmed map[string]bool // channel subscribed on the current connection
	retry     map[string]bool // channels to subscribe again (after a transient error)
	subFails  map[string]int  // channel -> subscribes refused in a row (transient errors)
	retired   bool            // Cluster: its node is no longer a primary
}

// newShard returns a shard whose loops are not started yet.
func (b *Broker) newShard(addr string, client *redis.Client) *shard {
	s := &shard{
		b: b, addr: addr, client: client, sharded: client != nil,
		reconcileCh: make(chan struct{}, 1),
		confirmed:   make(map[string]bool),
		retry:       make(map[string]bool),
		subFails:    make(map[string]int),
	}
	s.ctx, s.cancel = context.WithCancel(b.ctx)
	s.psc = s.newPSConn(0) // no channel yet: connects on first use
	return s
}

func (s *shard) start() {
	s.wg.Add(2)
	go s.receiveLoop()
	go s.reconcileLoop()
}

// stop ends the shard's loops and closes its connection and client. The
// broker's mu must not be held.
func (s *shard) stop() {
	s.cancel()
	// receiveLoop installs no connection once ctx is done (see replace):
	// this one is the last.
	_ = s.conn().ps.Close()
	s.wg.Wait()
	if s.client != nil {
		_ = s.client.Close()
	}
	if s.data != nil {
		_ = s.data.Close()
	}
}

// newPSConn returns a new pub/sub connection (it dials on first use).
func (s *shard) newPSConn(gen uint64) *psConn {
	c := &psConn{gen: gen, sharded: s.sharded}
	c.ctx = context.WithValue(s.ctx, psConnKey{}, c)
	if s.client != nil {
		c.ps = s.client.Subscribe(c.ctx)
	} else {
		c.ps = s.b.rdb.Subscribe(c.ctx)
	}
	return c
}

// conn returns the current pub/sub connection.
func (s *shard) conn() *psConn {
	s.psMu.Lock()
	defer s.psMu.Unlock()
	return s.psc
}

func (s *shard) signalReconcile() {
	select {
	case s.reconcileCh <- struct{}{}:
	default:
	}
}

// setUp records whether the shard's connection works; the broker is up
// when every shard's is.
func (s *shard) setUp(v bool, err error) {
	if s.up.Swap(v) == v {
		return
	}
	if s.addr != "" {
		if v {
			s.b.log.Debug("redisbroker: pub/sub connection to a primary works", "node", s.addr)
		} else {
			s.b.log.Debug("redisbroker: pub/sub connection to a primary lost", "node", s.addr, "err", err)
		}
	}
	s.b.updateUp(err)
}

// reconcileLoop makes the shard connection's channel subscriptions follow
// the set of topics with local subscribers that the shard carries: one
// SUBSCRIBE per topic (so an error reply names its channel), UNSUBSCRIBE
// when its last subscriber leaves or its slot moves to another shard. On
// a new connection (see receiveLoop) it subscribes every topic again. A
// failed write marks the connection broken; receiveLoop replaces it and
// signals this loop again.
func (s *shard) reconcileLoop() {
	defer s.wg.Done()
	b := s.b
	issued := make(map[string]bool) // channels subscribed on c
	var c *psConn
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.reconcileCh:
		}
		if cur := s.conn(); cur != c {
			c = cur
			clear(issued)
		}
		var add, del []string
		b.mu.Lock()
		for ch := range s.retry {
			delete(issued, ch)
		}
		clear(s.retry)
		for ch, t := range b.topics {
			if t.sh == s && !issued[ch] {
				add = append(add, ch)
			}
		}
		for ch := range issued {
			if t := b.topics[ch]; t == nil || t.sh != s {
				del = append(del, ch)
			}
		}
		b.mu.Unlock()
		if len(del) > 0 {
			for _, ch := range del {
				delete(issued, ch)
			}
			// SUNSUBSCRIBE takes channels of one slot only: one each.
			batches := [][]string{del}
			if s.sharded {
				batches = batches[:0]
				for i := range del {
					batches = append(batches, del[i:i+1])
				}
			}
			for _, chs := range batches {
				if err := c.unsubscribe(chs); err != nil {
					if s.ctx.Err() == nil {
						b.log.Debug("redisbroker: unsubscribe", "channels", len(chs), "err", err)
					}
					break
				}
			}
		}
		for _, ch := range add {
			issued[ch] = true
			if err := c.subscribe(ch); err != nil {
				if s.ctx.Err() == nil {
					b.log.Debug("redisbroker: subscribe", "channel", ch, "err", err)
				}
				break // the connection is broken: its replacement subscribes all
			}
		}
	}
}

// receiveLoop reads the shard's pub/sub connection: confirmations, events,
// pongs, error replies. It pings the connection when it has been silent
// for pingInterval and replaces it (see replace) when a command on it
// stays unanswered for answerTimeout, when a write on it failed, or when
// reading fails. It never does I/O other than reading, pinging and
// replacing, so a slow Redis read elsewhere never delays live events of
// other topics.
func (s *shard) receiveLoop() {
	defer s.wg.Done()
	b := s.b
	c := s.conn()
	backoff := time.Duration(0)
	reason := ""  // why the last working connection was given up; reported when its successor answers
	fresh := true // c has not answered yet
	_ = c.ping()  // connects now, so Connected turns true quickly
	for {
		if s.ctx.Err() != nil {
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
			c, fresh, reason = s.replace(c, fresh, reason, why, broken, &backoff)
			continue
		case timeout <= 0:
			err := fmt.Errorf("redisbroker: pub/sub connection: no answer for %v", answerTimeout)
			c, fresh, reason = s.replace(c, fresh, reason, ReconnectUnanswered, err, &backoff)
			continue
		}
		msg, err := c.ps.ReceiveTimeout(c.ctx, max(timeout, 10*time.Millisecond))
		if s.ctx.Err() != nil {
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
				if !s.onErrorReply(c, err) {
					c, fresh, reason = s.replace(c, fresh, reason, ReconnectError, err, &backoff)
				}
			default:
				c, fresh, reason = s.replace(c, fresh, reason, ReconnectError, err, &backoff)
			}
			continue
		}
		inStep := true
		switch m := msg.(type) {
		case *redis.Subscription:
			switch {
			case c.answered(m.Kind, m.Channel):
				s.onSubscription(m)
			case m.Kind == "sunsubscribe":
				// Unasked: the node gave up the channel's slot (a slot
				// migration or a failover moved it).
				s.onSlotLost(m.Channel)
			default:
				inStep = false
			}
		case *redis.Pong:
			inStep = c.answered("ping", "")
		case *redis.Message:
			s.onMessage(m.Channel, m.Payload)
		}
		if !inStep {
			err := fmt.Errorf("redisbroker: pub/sub connection: unexpected %v", msg)
			c, fresh, reason = s.replace(c, fresh, reason, ReconnectError, err, &backoff)
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
				b.log.Info("redisbroker: pub/sub connection replaced", "after", reason, "node", s.addr)
				reason = ""
			}
		}
		s.setUp(true, nil)
	}
}

// replace closes the pub/sub connection c and installs a new one: every
// topic of the shard is marked unconfirmed (its live subscribers are
// refilled from the stream once the new connection confirms its channel)
// and reconcileLoop subscribes every topic on the new connection.
// Messages still unread on c are never read: the stream refill delivers
// them. Repeated failures of connections that never answered back off up
// to maxBackoff. It returns the new connection, fresh=true, and the reason
// to report when it answers.
func (s *shard) replace(c *psConn, fresh bool, reason, why string, err error, backoff *time.Duration) (*psConn, bool, string) {
	b := s.b
	s.setUp(false, err)
	if !fresh {
		reason = why
	}
	if fresh {
		// Back off while Redis stays unreachable; a connection that
		// worked is replaced at once.
		if *backoff > 0 {
			t := time.NewTimer(*backoff)
			select {
			case <-s.ctx.Done():
				t.Stop()
				return c, fresh, reason
			case <-t.C:
			}
		}
		*backoff = min(max(2**backoff, 50*time.Millisecond), maxBackoff)
	}
	if !fresh {
		b.log.Warn("redisbroker: replacing the pub/sub connection", "reason", why, "node", s.addr, "err", err)
	} else {
		b.log.Debug("redisbroker: replacing the pub/sub connection", "reason", why, "node", s.addr, "err", err)
	}
	if why == ReconnectUnanswered && b.dialed != nil {
		// The pool's connections to the same server most likely went deaf
		// with this one.
		if n := b.dialed.closeBefore(time.Now(), s.addr); n > 0 {
			b.log.Debug("redisbroker: closed the client's connections dialed before the pub/sub connection went deaf", "connections", n)
		}
	}
	next := s.newPSConn(c.gen + 1)
	s.psMu.Lock()
	if s.ctx.Err() != nil {
		// stop is running and closes s.psc: never install another.
		s.psMu.Unlock()
		_ = next.ps.Close()
		return c, fresh, reason
	}
	s.psc = next
	s.psMu.Unlock()
	s.disconnected()
	// Closing takes the PubSub's lock, which a writer may hold for up to a
	// write timeout on a dead connection: not on this goroutine.
	s.wg.Go(func() { _ = c.ps.Close() })
	s.signalReconcile()
	_ = next.ping()
	return next, true, reason
}

// onErrorReply handles an error reply on the pub/sub connection: it
// answers c's oldest command. A refused SUBSCRIBE ends the subscriptions
// of that channel's topic with an error wrapping ErrSubscribeRefused, or,
// for a transient error (LOADING, BUSY, MOVED...), is issued again after
// a backoff; other topics are not affected. It returns false when no
// command was waiting: the connection is out of step.
func (s *shard) onErrorReply(c *psConn, err error) bool {
	b := s.b
	cmd, ok := c.failed()
	if !ok {
		return false
	}
	if cmd.kind != "subscribe" {
		b.log.Warn("redisbroker: Redis answered "+strings.ToUpper(cmd.kind)+" on the pub/sub connection with an error", "channels", cmd.channels, "err", err)
		return true
	}
	ch := cmd.channels[0]
	if msg := err.Error(); strings.HasPrefix(msg, "MOVED") || strings.HasPrefix(msg, "ASK") {
		// Cluster: the slot is another primary's now.
		b.signalRoute()
	}
	b.mu.Lock()
	t := b.topics[ch]
	if t == nil || t.sh != s {
		delete(s.subFails, ch)
		b.mu.Unlock()
		return true
	}
	if transientServerError(err.Error()) {
		n := s.subFails[ch] + 1
		s.subFails[ch] = n
		b.mu.Unlock()
		d := min(50*time.Millisecond<<min(n, 10), maxBackoff)
		b.log.Warn("redisbroker: Redis refused SUBSCRIBE for now; retrying", "topic", t.name, "in", d, "err", err)
		time.AfterFunc(d, func() {
			b.mu.Lock()
			if b.topics[ch] == t && t.sh == s {
				s.retry[ch] = true
			}
			b.mu.Unlock()
			s.signalReconcile()
		})
		return true
	}
	delete(s.subFails, ch)
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
	for _, sub := range subs {
		sub.End(end) // releasing the last one drops the topic and unsubscribes it
	}
	return true
}

// disconnected marks every topic of the shard unconfirmed: its channel
// subscription lapsed with the connection, events may be lost until the
// new connection confirms it (the confirmation then triggers the refill).
func (s *shard) disconnected() {
	b := s.b
	b.mu.Lock()
	defer b.mu.Unlock()
	clear(s.confirmed)
	for _, t := range b.topics {
		if t.sh == s {
			t.mu.Lock()
			t.setConfirmed(false)
			t.mu.Unlock()
		}
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

func (s *shard) onSubscription(m *redis.Subscription) {
	b := s.b
	on := m.Kind == "subscribe" || m.Kind == "ssubscribe"
	if !on && m.Kind != "unsubscribe" && m.Kind != "sunsubscribe" {
		return
	}
	b.mu.Lock()
	if on {
		s.confirmed[m.Channel] = true
		delete(s.subFails, m.Channel)
	} else {
		delete(s.confirmed, m.Channel)
	}
	t := b.topics[m.Channel]
	if t != nil && t.sh != s {
		t = nil // another shard carries it now
	}
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
		s.signalReconcile()
	}
}

// onSlotLost handles an unasked sunsubscribe: the node no longer serves
// the channel's slot. The topic is unconfirmed, its subscription issued
// again (to the node the routes name once they are refreshed: a MOVED
// reply in between is retried), and its live subscribers are refilled
// from the stream once a primary confirms it.
func (s *shard) onSlotLost(ch string) {
	b := s.b
	b.mu.Lock()
	delete(s.confirmed, ch)
	if t := b.topics[ch]; t != nil && t.sh == s {
		t.mu.Lock()
		t.setConfirmed(false)
		t.mu.Unlock()
		s.retry[ch] = true
	}
	b.mu.Unlock()
	b.log.Debug("redisbroker: a primary gave up a topic's slot", "node", s.addr, "channel", ch)
	b.signalRoute()
	s.signalReconcile()
}
