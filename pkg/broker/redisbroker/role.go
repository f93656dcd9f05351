package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/redis/go-redis/v9"
)

// roleInterval: with Sentinel, how often the broker checks that its
// pub/sub connection is on the primary. A failover moves the primary; a
// demoted primary that stays reachable keeps its pub/sub clients (unless
// Sentinel's reconfiguration killed them) and sends them no redirect: the
// broker would hear only what replication brings it, late, or nothing once
// the old primary is cut off from the new one.
const roleInterval = time.Second

// errDemoted marks a pub/sub connection given up because its server is no
// longer the primary.
var errDemoted = errors.New("redisbroker: the pub/sub connection's server is no longer the primary")

// roleLoop runs with the broker's own Sentinel client: every roleInterval
// it asks the server of the pub/sub connection for its ROLE, and the
// sentinels for the primary's address; when the server answers as a
// replica, or the sentinels name another address, the connection is
// marked broken and receiveLoop replaces it — the new one dials the
// primary the sentinels name, and every topic is refilled from its
// stream. No answer is no verdict: a dead server is the missed pongs'
// business.
func (b *Broker) roleLoop() {
	defer b.wg.Done()
	nodes := map[string]*redis.Client{} // by address, for ROLE
	sentinels := make([]*redis.SentinelClient, len(b.failover.SentinelAddrs))
	defer func() {
		for _, c := range nodes {
			c.Close()
		}
		for _, c := range sentinels {
			if c != nil {
				c.Close()
			}
		}
	}()
	tick := time.NewTicker(roleInterval)
	defer tick.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-tick.C:
		}
		c := b.conn()
		p := c.node.Load()
		if p == nil {
			continue
		}
		addr := *p
		if err := b.checkRole(addr, nodes, sentinels); err != nil && c.fail(err) {
			b.log.Warn("redisbroker: the pub/sub connection is not on the primary; replacing it", "node", addr, "err", err)
		}
		// Forget clients of servers the connection left.
		for a, nc := range nodes {
			if a != addr {
				nc.Close()
				delete(nodes, a)
			}
		}
	}
}

// checkRole returns an error wrapping errDemoted when the server at addr
// is not the primary.
func (b *Broker) checkRole(addr string, nodes map[string]*redis.Client, sentinels []*redis.SentinelClient) error {
	o := b.failover
	timeout := min(o.DialTimeout, roleInterval)
	nc := nodes[addr]
	if nc == nil {
		nc = redis.NewClient(&redis.Options{
			Addr: addr, Username: o.Username, Password: o.Password, TLSConfig: o.TLSConfig,
			Dialer: newDialer(timeout, o.TLSConfig), DialTimeout: timeout, ReadTimeout: timeout, WriteTimeout: timeout,
			MaxRetries: -1, DialerRetries: 1, PoolSize: 1, ContextTimeoutEnabled: true,
		})
		nodes[addr] = nc
	}
	ctx, cancel := context.WithTimeout(b.ctx, roleInterval)
	defer cancel()
	role, err := nc.Do(ctx, "ROLE").Slice()
	if err == nil && len(role) > 0 && role[0] != "master" {
		return fmt.Errorf("%w: %s answers ROLE %v", errDemoted, addr, role[0])
	}
	for i, sa := range o.SentinelAddrs {
		if sentinels[i] == nil {
			sentinels[i] = redis.NewSentinelClient(&redis.Options{
				Addr: sa, Username: o.SentinelUsername, Password: o.SentinelPassword, TLSConfig: o.TLSConfig,
				Dialer: newDialer(timeout, o.TLSConfig), DialTimeout: timeout, ReadTimeout: timeout, WriteTimeout: timeout,
				MaxRetries: -1, DialerRetries: 1, PoolSize: 1, ContextTimeoutEnabled: true,
			})
		}
		a, err := sentinels[i].GetMasterAddrByName(ctx, o.MasterName).Result()
		if err != nil || len(a) != 2 {
			continue
		}
		if primary := net.JoinHostPort(a[0], a[1]); primary != addr {
			return fmt.Errorf("%w: the sentinel at %s names %s the primary", errDemoted, sa, primary)
		}
		return nil
	}
	return nil
}
