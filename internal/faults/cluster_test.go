package faults

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/herald-sse/herald/internal/testredis"
	"github.com/redis/go-redis/v9"
)

// Sizes of the Redis Cluster fault tests (issue 10).
const (
	clusterPrimaries     = 3
	clusterTopicsPerNode = 4   // topics on every primary's slots
	clusterSubs          = 150 // live subscribers, spread over brokers and topics
	clusterMoved         = 2   // topics whose slots a resharding moves, per source primary
)

// TestClusterFaults: 3 primaries + 3 replicas; three brokers on the
// cluster URL, live subscribers on topics of every shard, publishers
// running on every broker; then one fault:
//
//   - kill: the primary of some topics SIGKILLed, its replica promoted;
//   - cut: that primary cut off the network without a RST (docker network
//     disconnect), its replica promoted;
//   - reshard: the slots of live topics migrated to another primary under
//     load (CLUSTER SETSLOT IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE);
//   - add: a fourth primary joins, and slots of live topics of two
//     primaries move to it.
//
// The fault suite's property must hold on every subscriber (the final
// log, contiguous, once, in order — or an honest failover reset), and no
// event may go over the cluster bus to every node: sharded pub/sub keeps
// cluster_stats_messages_publish_sent where it was.
func TestClusterFaults(t *testing.T) {
	for _, fault := range []string{"kill", "cut", "reshard", "add"} {
		t.Run(fault, func(t *testing.T) {
			c := testredis.StartCluster(t, clusterPrimaries, 1)
			target := clusterTarget(t, c, fault)
			before := publishSent(t, c)
			res := runHA(t, target, sentinelRun{failovers: 1, subs: clusterSubs})
			t.Logf("%s: %s", fault, res)
			after := publishSent(t, c)
			for name, n := range after {
				if b, ok := before[name]; ok && n != b {
					t.Errorf("node %s: cluster_stats_messages_publish_sent went from %d to %d: events were broadcast over the cluster bus", name, b, n)
				}
			}
			t.Logf("cluster_stats_messages_publishshard_sent (SPUBLISH to the shard's replicas): %d", c.PublishShardSent(context.Background()))
		})
	}
}

// TestClusterWaitFailover: with WaitReplicas 1, a primary SIGKILLed under
// load loses no acknowledged event (Redis Cluster promotes the replica
// that has them), and the property holds. Two replicas per primary: once
// one is promoted, WAIT 1 still has a replica to count (with one, every
// publish to the shard fails with ErrNotReplicated until a replica joins
// — as it should).
func TestClusterWaitFailover(t *testing.T) {
	c := testredis.StartCluster(t, clusterPrimaries, 2)
	res := runHA(t, clusterTarget(t, c, "kill"), sentinelRun{failovers: 1, subs: 60, wait: 1})
	t.Logf("kill with --redis-wait-replicas 1: %s", res)
	if res.lost > 0 {
		t.Errorf("%d acknowledged events lost with WaitReplicas 1", res.lost)
	}
}

// clusterTarget picks topics on every primary and returns the run's
// target for fault.
func clusterTarget(t *testing.T, c *testredis.Cluster, fault string) haTarget {
	ctx := context.Background()
	primaries := c.Primaries(ctx)
	if len(primaries) != clusterPrimaries {
		t.Fatalf("%d primaries, want %d", len(primaries), clusterPrimaries)
	}
	owned := map[string][]string{} // primary name -> topics
	var topics []string
	stamp := time.Now().UnixNano() % 1e9
	for i := 0; len(topics) < clusterPrimaries*clusterTopicsPerNode; i++ {
		if i > 10000 {
			t.Fatal("no topic spread over every primary")
		}
		topic := fmt.Sprintf("clu-%s-%d-%d", fault, stamp, i)
		n := c.PrimaryForSlot(ctx, testredis.Slot("herald:{"+topic+"}"))
		if n == nil || len(owned[n.Name]) >= clusterTopicsPerNode {
			continue
		}
		owned[n.Name] = append(owned[n.Name], topic)
		topics = append(topics, topic)
	}
	slotOf := func(topic string) int { return testredis.Slot("herald:{" + topic + "}") }
	target := haTarget{
		name:    fault,
		url:     c.URL(),
		cluster: true,
		topics:  topics,
		reader:  func(t *testing.T) redis.Cmdable { return c.Client(t) },
	}
	affected := func(topics ...string) map[string]bool {
		m := map[string]bool{}
		for _, topic := range topics {
			m[topic] = true
		}
		return m
	}
	switch fault {
	case "kill", "cut":
		target.affected = affected(owned[primaries[0].Name]...)
		target.fault = func(t *testing.T, f int) time.Time {
			old := primaries[0]
			t0 := time.Now()
			if fault == "kill" {
				old.Kill(t)
			} else {
				old.Disconnect(t)
			}
			next := c.WaitFailover(t, old, 60*time.Second)
			t.Logf("failover %d: %s -> %s after %v (topics %v)", f+1, old.Name, next.Name, time.Since(t0).Round(time.Millisecond), owned[old.Name])
			return t0
		}
	case "reshard":
		target.affected = affected(owned[primaries[0].Name][:clusterMoved]...)
		target.fault = func(t *testing.T, f int) time.Time {
			from, to := primaries[0], primaries[1]
			t0 := time.Now()
			for _, topic := range owned[from.Name][:clusterMoved] {
				c.MigrateSlot(t, slotOf(topic), from, to)
			}
			t.Logf("resharding %d: slots of %v moved %s -> %s in %v", f+1, owned[from.Name][:clusterMoved], from.Name, to.Name, time.Since(t0).Round(time.Millisecond))
			return t0
		}
	case "add":
		target.affected = affected(append(slices.Clone(owned[primaries[0].Name][:clusterMoved]), owned[primaries[1].Name][:clusterMoved]...)...)
		target.fault = func(t *testing.T, f int) time.Time {
			t0 := time.Now()
			n := c.AddPrimary(t)
			for _, from := range primaries[:2] {
				for _, topic := range owned[from.Name][:clusterMoved] {
					c.MigrateSlot(t, slotOf(topic), from, n)
				}
			}
			t.Logf("new primary %s joined and took the slots of %d topics in %v", n.Name, 2*clusterMoved, time.Since(t0).Round(time.Millisecond))
			return t0
		}
	default:
		t.Fatalf("unknown fault %q", fault)
	}
	return target
}

// publishSent returns cluster_stats_messages_publish_sent per node that
// answers.
func publishSent(t *testing.T, c *testredis.Cluster) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, n := range c.Nodes() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		info, err := n.Client(t).ClusterInfo(ctx).Result()
		cancel()
		if err != nil {
			continue
		}
		var v int64
		for _, line := range strings.Split(info, "\n") {
			if _, err := fmt.Sscanf(strings.TrimSpace(line), "cluster_stats_messages_publish_sent:%d", &v); err == nil {
				break
			}
		}
		out[n.Name] = v
	}
	return out
}
