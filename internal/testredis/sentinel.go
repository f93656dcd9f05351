package testredis

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultSentinelImage is the Sentinel image used when
// HERALD_SENTINEL_IMAGE is unset. No official image starts in Sentinel
// mode by itself: scripts/images.sh builds this one from Debian's
// redis-sentinel package.
const DefaultSentinelImage = "herald-sentinel:local"

// SentinelScript is the command that builds the Sentinel image.
const SentinelScript = "scripts/images.sh sentinel"

// SentinelImage returns $HERALD_SENTINEL_IMAGE or DefaultSentinelImage.
func SentinelImage() string { return envOr("HERALD_SENTINEL_IMAGE", DefaultSentinelImage) }

// MasterName is the name the sentinels of StartSentinel monitor.
const MasterName = "heraldmaster"

// Sentinel timings of StartSentinel: a primary silent for downAfter is
// subjectively down; with the quorum it is failed over.
const (
	downAfter       = 1500 * time.Millisecond
	failoverTimeout = 6 * time.Second
)

// Topology is a Redis primary with replicas and a set of sentinels, each in
// its own container on one Docker network with fixed addresses, which the
// host reaches directly (no port mapping: the sentinels hand out the
// network's addresses). Methods fail the test on error; they are safe for
// concurrent use.
type Topology struct {
	Nodes     []*Node // Redis servers; Nodes[0] is the first primary
	Sentinels []*Node

	env *netEnv
}

// URL returns the Sentinel URL of the topology, in go-redis's form:
// redis://s1:26379?master_name=M&addr=s2:26379...
func (tp *Topology) URL() string {
	u := "redis://" + tp.Sentinels[0].Addr + "?master_name=" + MasterName
	for _, s := range tp.Sentinels[1:] {
		u += "&addr=" + s.Addr
	}
	return u
}

// StartSentinel starts a primary, replicas replicas of it and sentinels
// sentinels (quorum: a majority) on a new Docker network, waits until every
// sentinel knows every replica and every other sentinel, and registers the
// removal of everything with t.Cleanup. Extra redis-server arguments (opts)
// apply to every Redis server. It skips the test (fails it when CI=true)
// without Docker or either image.
func StartSentinel(t testing.TB, replicas, sentinels int, opts ...Option) *Topology {
	t.Helper()
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := newNetEnv(t, ctx, [2]string{Image(), Script}, [2]string{SentinelImage(), SentinelScript})
	tp := &Topology{env: env}
	addr := env.addr
	start := func(name string, ip netip.Addr, img string, port int, cmd []string, ready string) *Node {
		t.Helper()
		n, err := env.start(t, ctx, name, ip, img, port, cmd, ready)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	primary := addr(0)
	for i := range 1 + replicas {
		args := append([]string(nil), cfg.args...)
		if i > 0 {
			args = append(args, "--replicaof", primary.String(), "6379")
		}
		tp.Nodes = append(tp.Nodes, start(fmt.Sprintf("redis%d", i), addr(i), Image(), 6379, args, "Ready to accept connections"))
	}
	quorum := sentinels/2 + 1
	for i := range sentinels {
		args := []string{
			"--sentinel", "monitor", MasterName, primary.String(), "6379", fmt.Sprint(quorum),
			"--sentinel", "down-after-milliseconds", MasterName, fmt.Sprint(downAfter.Milliseconds()),
			"--sentinel", "failover-timeout", MasterName, fmt.Sprint(failoverTimeout.Milliseconds()),
			"--sentinel", "parallel-syncs", MasterName, "2",
		}
		tp.Sentinels = append(tp.Sentinels, start(fmt.Sprintf("sentinel%d", i), addr(20+i), SentinelImage(), 26379, args, "+monitor master"))
	}
	// Every sentinel must know the replicas (from the primary's INFO) and
	// the other sentinels (from the hello channel) before a failover can
	// succeed.
	deadline := time.Now().Add(60 * time.Second)
	for _, s := range tp.Sentinels {
		sc := redis.NewSentinelClient(&redis.Options{Addr: s.Addr, MaxRetries: -1, DialTimeout: time.Second})
		for {
			rs, err1 := sc.Replicas(ctx, MasterName).Result()
			ss, err2 := sc.Sentinels(ctx, MasterName).Result()
			if err1 == nil && err2 == nil && len(rs) == replicas && len(ss) == sentinels-1 {
				break
			}
			if time.Now().After(deadline) {
				sc.Close()
				t.Fatalf("testredis: %s does not know the topology within 60s: replicas %v (%v), sentinels %v (%v)", s.Name, len(rs), err1, len(ss), err2)
			}
			time.Sleep(100 * time.Millisecond)
		}
		sc.Close()
	}
	// And every replica must be in sync.
	for _, n := range tp.Nodes[1:] {
		waitReplicaSynced(t, n, deadline)
	}
	return tp
}

func waitReplicaSynced(t testing.TB, n *Node, deadline time.Time) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: n.Addr, MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		info, err := c.Info(ctx, "replication").Result()
		cancel()
		if err == nil && strings.Contains(info, "master_link_status:up") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("testredis: replica %s not in sync: %v", n.Name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Primary returns the node the sentinels currently name as the primary
// (the first sentinel that answers decides), or nil if none answers or it
// names an unknown address.
func (tp *Topology) Primary(ctx context.Context) *Node {
	for _, s := range tp.Sentinels {
		sc := redis.NewSentinelClient(&redis.Options{Addr: s.Addr, MaxRetries: -1, DialTimeout: 500 * time.Millisecond, ReadTimeout: time.Second})
		a, err := sc.GetMasterAddrByName(ctx, MasterName).Result()
		sc.Close()
		if err != nil {
			continue
		}
		return tp.node(net.JoinHostPort(a[0], a[1]))
	}
	return nil
}

func (tp *Topology) node(addr string) *Node {
	for _, n := range tp.Nodes {
		if n.Addr == addr {
			return n
		}
	}
	return nil
}

// WaitPrimary waits until the sentinels name a primary other than old (nil:
// any) and that node answers ROLE as a master, and returns it.
func (tp *Topology) WaitPrimary(t testing.TB, old *Node, timeout time.Duration) *Node {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		p := tp.Primary(ctx)
		ok := false
		if p != nil && p != old {
			c := redis.NewClient(&redis.Options{Addr: p.Addr, MaxRetries: -1, DialTimeout: 500 * time.Millisecond})
			role, err := c.Do(ctx, "ROLE").Slice()
			c.Close()
			ok = err == nil && len(role) > 0 && role[0] == "master"
		}
		cancel()
		if ok {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("testredis: no new primary within %v (sentinels name %v)", timeout, p)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
