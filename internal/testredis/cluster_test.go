package testredis

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestCluster: StartCluster(3, 1) forms a healthy cluster that go-redis
// uses through URL; Slot agrees with CLUSTER KEYSLOT; PublishSent counts
// classic PUBLISH broadcasts and not SPUBLISH; MigrateSlot moves a slot
// with its keys while a client keeps writing to it; AddPrimary joins a
// node that MigrateSlot then gives a slot; killing a primary fails its
// slots over to its replica (WaitFailover), and the killed node rejoins as
// a replica.
func TestCluster(t *testing.T) {
	start := time.Now()
	c := StartCluster(t, 3, 1)
	t.Logf("cluster of %d nodes healthy in %v: %s", len(c.Nodes()), time.Since(start).Round(time.Millisecond), c.URL())
	ctx := t.Context()

	opt, err := redis.ParseClusterURL(c.URL())
	if err != nil || len(opt.Addrs) != 6 {
		t.Fatalf("ParseClusterURL(%s): %v, %v", c.URL(), opt, err)
	}
	cc := redis.NewClusterClient(opt)
	t.Cleanup(func() { cc.Close() })

	n0 := c.Nodes()[0].Client(t)
	for i := range 300 {
		key := fmt.Sprintf("key%d", i)
		switch i % 3 {
		case 1:
			key = fmt.Sprintf("herald:{topic%d}:s", i)
		case 2:
			key = fmt.Sprintf("{}%d{x}", i)
		}
		want, err := n0.ClusterKeySlot(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		if got := Slot(key); got != int(want) {
			t.Fatalf("Slot(%q) = %d, CLUSTER KEYSLOT says %d", key, got, want)
		}
	}

	// Keys land on every shard, where PrimaryForSlot says.
	for i := range 300 {
		if err := cc.Set(ctx, fmt.Sprintf("k%d", i), i, 0).Err(); err != nil {
			t.Fatalf("SET through the cluster client: %v", err)
		}
	}
	primaries := c.Primaries(ctx)
	if !slices.Equal(primaries, c.Nodes()[:3]) {
		t.Fatalf("Primaries = %v, want the first three nodes", names(primaries))
	}
	for _, p := range primaries {
		if n, err := p.Client(t).DBSize(ctx).Result(); err != nil || n == 0 {
			t.Fatalf("%s holds %d keys (%v): the keys should spread over every shard", p.Name, n, err)
		}
	}
	if p := c.PrimaryForSlot(ctx, Slot("k7")); p == nil {
		t.Fatal("PrimaryForSlot: nil")
	} else if got, err := p.Client(t).Get(ctx, "k7").Result(); err != nil || got != "7" {
		t.Fatalf("k7 on %s, its slot's primary: %q, %v", p.Name, got, err)
	}

	// Classic PUBLISH is broadcast over the cluster bus, SPUBLISH is not.
	before := c.PublishSent(ctx)
	if err := cc.Publish(ctx, "broadcast", "x").Err(); err != nil {
		t.Fatal(err)
	}
	mid := c.PublishSent(ctx)
	if mid <= before {
		t.Fatalf("publish_sent %d after a PUBLISH, %d before: the counter does not count broadcasts", mid, before)
	}
	shardBefore := c.PublishShardSent(ctx)
	for range 10 {
		if err := cc.SPublish(ctx, "sharded", "x").Err(); err != nil {
			t.Fatal(err)
		}
	}
	if after := c.PublishSent(ctx); after != mid {
		t.Errorf("publish_sent went from %d to %d with SPUBLISH only", mid, after)
	}
	if got := c.PublishShardSent(ctx); got <= shardBefore {
		t.Errorf("publishshard_sent %d after SPUBLISH, %d before", got, shardBefore)
	}
	t.Logf("publish_sent %d -> %d after one PUBLISH; publishshard_sent +%d after 10 SPUBLISH", before, mid, c.PublishShardSent(ctx)-shardBefore)

	// MigrateSlot under load: a writer keeps incrementing a counter of the
	// slot while it moves; no increment is lost or doubled.
	slot := Slot("{mig}")
	from := c.PrimaryForSlot(ctx, slot)
	to := primaries[0]
	if to == from {
		to = primaries[1]
	}
	for i := range 200 {
		if err := cc.Set(ctx, fmt.Sprintf("{mig}:%d", i), i, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	var incrs atomic.Int64
	var loadErr error
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := cc.Incr(ctx, "{mig}:counter").Err(); err != nil {
				loadErr = err
				return
			}
			incrs.Add(1)
		}
	})
	time.Sleep(100 * time.Millisecond)
	began := time.Now()
	c.MigrateSlot(t, slot, from, to)
	took := time.Since(began)
	time.Sleep(100 * time.Millisecond)
	close(stop)
	wg.Wait()
	if loadErr != nil {
		t.Fatalf("INCR during the migration: %v", loadErr)
	}
	if got, err := cc.Get(ctx, "{mig}:counter").Int64(); err != nil || got != incrs.Load() {
		t.Fatalf("counter %d (%v) after %d increments", got, err, incrs.Load())
	}
	if p := c.PrimaryForSlot(ctx, slot); p != to {
		t.Fatalf("slot %d owned by %v after MigrateSlot to %s", slot, p, to.Name)
	}
	direct := to.Client(t)
	for i := range 200 {
		if got, err := direct.Get(ctx, fmt.Sprintf("{mig}:%d", i)).Result(); err != nil || got != fmt.Sprint(i) {
			t.Fatalf("{mig}:%d on %s after the migration: %q, %v", i, to.Name, got, err)
		}
	}
	if err := from.Client(t).Get(ctx, "{mig}:0").Err(); err == nil || !strings.HasPrefix(err.Error(), "MOVED") {
		t.Fatalf("GET {mig}:0 on %s, the old owner: %v, want MOVED", from.Name, err)
	}
	t.Logf("slot %d moved from %s to %s in %v with 201 keys, %d INCRs meanwhile", slot, from.Name, to.Name, took.Round(time.Millisecond), incrs.Load())

	// AddPrimary, then give the new node a slot.
	np := c.AddPrimary(t)
	if got := c.Primaries(ctx); len(got) != 4 || !slices.Contains(got, np) {
		t.Fatalf("Primaries after AddPrimary = %v", names(got))
	}
	slot2 := Slot("{new}")
	if err := cc.Set(ctx, "{new}:a", "A", 0).Err(); err != nil {
		t.Fatal(err)
	}
	c.MigrateSlot(t, slot2, c.PrimaryForSlot(ctx, slot2), np)
	if got, err := cc.Get(ctx, "{new}:a").Result(); err != nil || got != "A" {
		t.Fatalf("{new}:a through the cluster client after moving it to %s: %q, %v", np.Name, got, err)
	}
	if got, err := np.Client(t).Get(ctx, "{new}:a").Result(); err != nil || got != "A" {
		t.Fatalf("{new}:a on %s: %q, %v", np.Name, got, err)
	}
	c.WaitHealthy(t, 30*time.Second)

	// Kill the primary of k7's slot: its replica takes over.
	victim := c.PrimaryForSlot(ctx, Slot("k7"))
	if n, err := victim.Client(t).Do(ctx, "WAIT", 1, 5000).Int(); err != nil || n != 1 {
		t.Fatalf("WAIT 1 on %s: %d, %v", victim.Name, n, err)
	}
	killed := time.Now()
	victim.Kill(t)
	promoted := c.WaitFailover(t, victim, 30*time.Second)
	t.Logf("%s killed: %s promoted, cluster ok after %v", victim.Name, promoted.Name, time.Since(killed).Round(time.Millisecond))
	if promoted == victim || c.PrimaryForSlot(ctx, Slot("k7")) != promoted {
		t.Fatalf("promoted %s, slot owner %v", promoted.Name, c.PrimaryForSlot(ctx, Slot("k7")))
	}
	// The data survived on the promoted replica. (cc would still send k7's
	// commands to the dead node: go-redis reloads its slot map on MOVED,
	// ASK or READONLY answers, or every ClusterStateReloadInterval, 60 s by
	// default — not when a node stops answering. A new client asks the
	// cluster first.)
	if got, err := promoted.Client(t).Get(ctx, "k7").Result(); err != nil || got != "7" {
		t.Fatalf("k7 on %s after the failover: %q, %v", promoted.Name, got, err)
	}
	if got, err := c.Client(t).Get(ctx, "k7").Result(); err != nil || got != "7" {
		t.Fatalf("k7 through a new cluster client after the failover: %q, %v", got, err)
	}

	// The killed node comes back as a replica of the promoted one.
	victim.Start(t)
	c.WaitHealthy(t, 60*time.Second)
	v, err := c.viewOf(ctx, victim)
	if err != nil {
		t.Fatal(err)
	}
	if me, _ := v.byID(victim.ID); !me.has("slave") || me.master != promoted.ID {
		t.Fatalf("%s after its restart: %v, replica of %q; want a replica of %s", victim.Name, me.flags, me.master, promoted.Name)
	}
	if got := c.Primaries(ctx); len(got) != 4 || slices.Contains(got, victim) {
		t.Fatalf("Primaries at the end = %v", names(got))
	}
}

func names(nodes []*Node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.Name)
	}
	return out
}
