package testredis

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-sse/herald/internal/hashslot"
	"github.com/redis/go-redis/v9"
)

// Slots is the number of hash slots of Redis Cluster.
const Slots = hashslot.Slots

// NodeTimeout is the cluster-node-timeout of StartCluster's nodes: a
// primary unreachable this long is flagged as failing, and its replica
// takes over about a second or two later.
const NodeTimeout = 1500 * time.Millisecond

// Cluster is a Redis Cluster: primaries with replicas, each node in its
// own container on a Docker network with fixed addresses, which the host
// reaches directly (no port mapping: the nodes announce the network's
// addresses, which the host and go-redis's ClusterClient use as they are).
// Its nodes are the Node type of a Topology (Kill, Start, Disconnect,
// Connect, Pause, Unpause, Client).
//
// Nodes run with cluster-require-full-coverage no (a shard without a
// primary does not stop the others) and, unless WithPersistence, without
// persistence: a killed node comes back empty, but with its node ID and
// its view of the cluster (nodes.conf stays in the container).
//
// Methods fail the test on error; they are safe for concurrent use.
// Methods that ask "the cluster" ask the nodes that answer, in order, and
// skip those that do not (killed, paused, cut off).
type Cluster struct {
	env  *netEnv
	args []string // redis-server arguments of every node

	mu     sync.Mutex // guards nodes and admins
	nodes  []*Node
	admins map[*Node]*redis.Client
}

// StartCluster starts primaries primaries with replicasPerPrimary replicas
// each, all on a new Docker network, forms a cluster of them by hand
// (CLUSTER ADDSLOTSRANGE, SET-CONFIG-EPOCH, MEET, REPLICATE: the image needs
// no redis-cli), with the slots split evenly in order among the primaries
// (Nodes()[i] is primary i; its replicas follow the primaries), and waits
// until every node reports cluster_state:ok, every node agrees on the slot
// map and every replica is in sync. Extra redis-server arguments (opts)
// apply to every node. Everything is removed at cleanup. It skips the test
// (fails it when CI=true) without Docker or the image.
func StartCluster(t testing.TB, primaries, replicasPerPrimary int, opts ...Option) *Cluster {
	t.Helper()
	if primaries < 1 || replicasPerPrimary < 0 {
		t.Fatalf("testredis: StartCluster(%d, %d): want at least one primary", primaries, replicasPerPrimary)
	}
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := &Cluster{
		env:    newNetEnv(t, ctx, [2]string{Image(), Script}),
		args:   cfg.args,
		admins: map[*Node]*redis.Client{},
	}
	t.Cleanup(c.closeAdmins)

	// Start every node at once; the cluster is formed once all answer.
	total := primaries * (1 + replicasPerPrimary)
	c.nodes = make([]*Node, total)
	errs := make([]error, total)
	var wg sync.WaitGroup
	for i := range total {
		wg.Go(func() { c.nodes[i], errs[i] = c.startNode(t, ctx, i) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.nodes {
		c.setID(t, ctx, n)
	}

	// Slots, distinct config epochs (as redis-cli --cluster create does, so
	// that no epoch collision has to be resolved), then one MEET per node.
	for i := range primaries {
		first, last := i*Slots/primaries, (i+1)*Slots/primaries-1
		if err := c.admin(c.nodes[i]).Do(ctx, "CLUSTER", "ADDSLOTSRANGE", first, last).Err(); err != nil {
			t.Fatalf("testredis: CLUSTER ADDSLOTSRANGE %d %d on %s: %v", first, last, c.nodes[i].Name, err)
		}
	}
	for i, n := range c.nodes {
		if err := c.admin(n).Do(ctx, "CLUSTER", "SET-CONFIG-EPOCH", i+1).Err(); err != nil {
			t.Fatalf("testredis: CLUSTER SET-CONFIG-EPOCH on %s: %v", n.Name, err)
		}
	}
	for _, n := range c.nodes[1:] {
		if err := c.admin(c.nodes[0]).ClusterMeet(ctx, n.ip.String(), "6379").Err(); err != nil {
			t.Fatalf("testredis: CLUSTER MEET %s: %v", n.Name, err)
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	c.waitKnown(t, deadline, c.nodes)
	for i := range primaries {
		for j := range replicasPerPrimary {
			r := c.nodes[primaries+i*replicasPerPrimary+j]
			if err := c.admin(r).ClusterReplicate(ctx, c.nodes[i].ID).Err(); err != nil {
				t.Fatalf("testredis: CLUSTER REPLICATE on %s: %v", r.Name, err)
			}
		}
	}
	c.waitHealthy(t, deadline, func(v view) error {
		for _, p := range c.nodes[:primaries] {
			if got := len(v.replicasOf(p.ID)); got != replicasPerPrimary {
				return fmt.Errorf("%s has %d replicas in the view of the cluster, want %d", p.Name, got, replicasPerPrimary)
			}
		}
		return nil
	})
	return c
}

// startNode starts node i of the cluster at the i-th address.
func (c *Cluster) startNode(t testing.TB, ctx context.Context, i int) (*Node, error) {
	ip := c.env.addr(i)
	args := append([]string{
		"--cluster-enabled", "yes",
		"--cluster-config-file", "nodes.conf",
		"--cluster-node-timeout", strconv.FormatInt(NodeTimeout.Milliseconds(), 10),
		"--cluster-announce-ip", ip.String(),
		"--cluster-require-full-coverage", "no",
	}, c.args...)
	return c.env.start(t, ctx, fmt.Sprintf("redis%d", i), ip, Image(), 6379, args, "Ready to accept connections")
}

func (c *Cluster) setID(t testing.TB, ctx context.Context, n *Node) {
	t.Helper()
	id, err := c.admin(n).Do(ctx, "CLUSTER", "MYID").Text()
	if err != nil {
		t.Fatalf("testredis: CLUSTER MYID on %s: %v", n.Name, err)
	}
	n.ID = id
}

// admin returns the shared client of n (no retries, short timeouts that a
// ctx deadline overrides).
func (c *Cluster) admin(n *Node) *redis.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	a, ok := c.admins[n]
	if !ok {
		a = redis.NewClient(&redis.Options{
			Addr: n.Addr, MaxRetries: -1, DialTimeout: 500 * time.Millisecond,
			ReadTimeout: 2 * time.Second, ContextTimeoutEnabled: true, PoolSize: 4,
		})
		c.admins[n] = a
	}
	return a
}

func (c *Cluster) closeAdmins() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, a := range c.admins {
		a.Close()
	}
	c.admins = nil
}

// Nodes returns every node of the cluster, primaries first as started,
// then their replicas, then the nodes AddPrimary added. Roles change with
// failovers: see Primaries.
func (c *Cluster) Nodes() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.nodes)
}

// URL returns the cluster's URL in go-redis's form (redis.ParseClusterURL):
// redis://ip1:6379?addr=ip2:6379&addr=ip3:6379... with every node.
func (c *Cluster) URL() string {
	nodes := c.Nodes()
	u := "redis://" + nodes[0].Addr
	for i, n := range nodes[1:] {
		sep := "&"
		if i == 0 {
			sep = "?"
		}
		u += sep + "addr=" + n.Addr
	}
	return u
}

// Client returns a go-redis ClusterClient of every node, closed at cleanup.
// Like any ClusterClient it reloads its slot map on MOVED, ASK and READONLY
// answers and every ClusterStateReloadInterval (60 s by default), not when
// a node stops answering: after a failover it keeps sending the failed
// primary's slots to it until then. A new client asks the cluster first.
func (c *Cluster) Client(t testing.TB) *redis.ClusterClient {
	t.Helper()
	var addrs []string
	for _, n := range c.Nodes() {
		addrs = append(addrs, n.Addr)
	}
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, DialTimeout: time.Second, ReadTimeout: 2 * time.Second})
	t.Cleanup(func() { cc.Close() })
	return cc
}

// Slot returns the hash slot of key, as CLUSTER KEYSLOT computes it (the
// broker's own computation: TestCluster checks it against the server).
func Slot(key string) int { return hashslot.Of(key) }

// clusterNode is one line of CLUSTER NODES.
type clusterNode struct {
	id, addr string
	flags    []string
	master   string   // the primary's ID for a replica, else "-"
	slots    [][2]int // owned ranges (migrating/importing marks left out)
}

func (n clusterNode) has(flag string) bool { return slices.Contains(n.flags, flag) }

func (n clusterNode) owns(slot int) bool {
	for _, r := range n.slots {
		if r[0] <= slot && slot <= r[1] {
			return true
		}
	}
	return false
}

// view is one node's CLUSTER NODES.
type view []clusterNode

func parseNodes(s string) (view, error) {
	var v view
	for line := range strings.SplitSeq(strings.TrimSpace(s), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			return nil, fmt.Errorf("CLUSTER NODES line %q", line)
		}
		n := clusterNode{id: f[0], flags: strings.Split(f[2], ","), master: f[3]}
		n.addr, _, _ = strings.Cut(f[1], "@")
		for _, s := range f[8:] {
			if strings.HasPrefix(s, "[") {
				continue
			}
			lo, hi, isRange := strings.Cut(s, "-")
			a, err1 := strconv.Atoi(lo)
			b, err2 := a, error(nil)
			if isRange {
				b, err2 = strconv.Atoi(hi)
			}
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("CLUSTER NODES slot %q", s)
			}
			n.slots = append(n.slots, [2]int{a, b})
		}
		v = append(v, n)
	}
	return v, nil
}

func (v view) byID(id string) (clusterNode, bool) {
	for _, n := range v {
		if n.id == id {
			return n, true
		}
	}
	return clusterNode{}, false
}

// owner returns the ID of the primary that owns slot, or "".
func (v view) owner(slot int) string {
	for _, n := range v {
		if n.has("master") && n.owns(slot) {
			return n.id
		}
	}
	return ""
}

func (v view) replicasOf(id string) []string {
	var out []string
	for _, n := range v {
		if n.master == id && !n.has("fail") {
			out = append(out, n.id)
		}
	}
	return out
}

// slotMap describes who owns which slots, to compare views.
func (v view) slotMap() string {
	var parts []string
	for _, n := range v {
		if n.has("master") && len(n.slots) > 0 {
			parts = append(parts, fmt.Sprint(n.id, n.slots))
		}
	}
	slices.Sort(parts)
	return strings.Join(parts, " ")
}

// coverage counts the slots some primary owns.
func (v view) coverage() int {
	k := 0
	for _, n := range v {
		if n.has("master") {
			for _, r := range n.slots {
				k += r[1] - r[0] + 1
			}
		}
	}
	return k
}

// viewOf returns n's CLUSTER NODES, within a second.
func (c *Cluster) viewOf(ctx context.Context, n *Node) (view, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	s, err := c.admin(n).ClusterNodes(ctx).Result()
	if err != nil {
		return nil, err
	}
	return parseNodes(s)
}

// anyView returns the view of the first node that answers, skipping skip.
func (c *Cluster) anyView(ctx context.Context, skip *Node) (view, error) {
	err := errors.New("no node")
	for _, n := range c.Nodes() {
		if n == skip {
			continue
		}
		var v view
		if v, err = c.viewOf(ctx, n); err == nil {
			return v, nil
		}
	}
	return nil, fmt.Errorf("no node of the cluster answers CLUSTER NODES: %w", err)
}

func (c *Cluster) nodeByID(id string) *Node {
	for _, n := range c.Nodes() {
		if n.ID == id {
			return n
		}
	}
	return nil
}

// Primaries returns the current primaries, in the order of Nodes: the
// nodes the first node that answers names as masters and does not flag as
// failed (a new primary from AddPrimary owns no slots yet). Nil if no node
// answers.
func (c *Cluster) Primaries(ctx context.Context) []*Node {
	v, err := c.anyView(ctx, nil)
	if err != nil {
		return nil
	}
	var out []*Node
	for _, n := range c.Nodes() {
		if cn, ok := v.byID(n.ID); ok && cn.has("master") && !cn.has("fail") {
			out = append(out, n)
		}
	}
	return out
}

// PrimaryForSlot returns the primary that owns slot in the view of the
// first node that answers, or nil.
func (c *Cluster) PrimaryForSlot(ctx context.Context, slot int) *Node {
	v, err := c.anyView(ctx, nil)
	if err != nil {
		return nil
	}
	return c.nodeByID(v.owner(slot))
}

// answering returns the nodes that answer PING within 500ms, but skip.
func (c *Cluster) answering(skip *Node) []*Node {
	nodes := c.Nodes()
	ok := make([]bool, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		if n == skip {
			continue
		}
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			ok[i] = c.admin(n).Ping(ctx).Err() == nil
		})
	}
	wg.Wait()
	var out []*Node
	for i, n := range nodes {
		if ok[i] {
			out = append(out, n)
		}
	}
	return out
}

// check reports why the cluster is not healthy in the views of nodes, or
// nil: every one reports cluster_state:ok, all agree on the owners of all
// 16384 slots and know the same nodes, every replica among them is in sync
// with its primary, and extra (if not nil) accepts the agreed view.
func (c *Cluster) check(ctx context.Context, nodes []*Node, extra func(view) error) error {
	if len(nodes) == 0 {
		return errors.New("no node answers")
	}
	var first view
	for _, n := range nodes {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		info, err := c.admin(n).ClusterInfo(cctx).Result()
		cancel()
		if err != nil {
			return fmt.Errorf("%s: CLUSTER INFO: %w", n.Name, err)
		}
		if !strings.Contains(info, "cluster_state:ok") {
			return fmt.Errorf("%s: not cluster_state:ok", n.Name)
		}
		v, err := c.viewOf(ctx, n)
		if err != nil {
			return fmt.Errorf("%s: CLUSTER NODES: %w", n.Name, err)
		}
		for _, cn := range v {
			if cn.has("handshake") || cn.has("noaddr") {
				return fmt.Errorf("%s: node %s is %v", n.Name, cn.addr, cn.flags)
			}
		}
		if got := v.coverage(); got != Slots {
			return fmt.Errorf("%s: %d slots covered", n.Name, got)
		}
		if first == nil {
			first = v
		} else if a, b := first.slotMap(), v.slotMap(); a != b || len(first) != len(v) {
			return fmt.Errorf("%s and %s disagree: %d nodes %s, %d nodes %s", nodes[0].Name, n.Name, len(first), a, len(v), b)
		}
		if me, ok := v.byID(n.ID); ok && me.has("slave") {
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			repl, err := c.admin(n).Info(cctx, "replication").Result()
			cancel()
			if err != nil || !strings.Contains(repl, "master_link_status:up") || !strings.Contains(repl, "master_sync_in_progress:0") {
				return fmt.Errorf("replica %s not in sync (%v)", n.Name, err)
			}
		}
	}
	if extra != nil {
		return extra(first)
	}
	return nil
}

func (c *Cluster) waitHealthy(t testing.TB, deadline time.Time, extra func(view) error) {
	t.Helper()
	for {
		err := c.check(context.Background(), c.answering(nil), extra)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("testredis: the cluster is not healthy: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// WaitHealthy waits until every node that answers reports cluster_state:ok,
// they all agree on the owner of every slot and know the same nodes, and
// every replica among them is in sync with its primary (e.g. after a
// restarted node rejoined).
func (c *Cluster) WaitHealthy(t testing.TB, timeout time.Duration) {
	t.Helper()
	c.waitHealthy(t, time.Now().Add(timeout), nil)
}

// waitKnown waits until each of nodes lists every one of them as a
// connected peer (handshakes done).
func (c *Cluster) waitKnown(t testing.TB, deadline time.Time, nodes []*Node) {
	t.Helper()
	for {
		err := func() error {
			for _, n := range nodes {
				v, err := c.viewOf(context.Background(), n)
				if err != nil {
					return fmt.Errorf("%s: %w", n.Name, err)
				}
				for _, m := range nodes {
					cn, ok := v.byID(m.ID)
					if !ok || cn.has("handshake") || cn.has("noaddr") {
						return fmt.Errorf("%s does not know %s yet", n.Name, m.Name)
					}
				}
			}
			return nil
		}()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("testredis: the nodes do not know each other: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// AddPrimary starts one more node on the cluster's network, introduces it
// with CLUSTER MEET and waits until every node that answers knows it and
// the cluster is healthy with it (see WaitHealthy). It
// is a primary without slots and without replicas: MigrateSlot gives it
// slots.
func (c *Cluster) AddPrimary(t testing.TB) *Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c.mu.Lock()
	i := len(c.nodes)
	c.mu.Unlock()
	n, err := c.startNode(t, ctx, i)
	if err != nil {
		t.Fatal(err)
	}
	c.setID(t, ctx, n)
	peers := c.answering(nil)
	if len(peers) == 0 {
		t.Fatal("testredis: AddPrimary: no node of the cluster answers")
	}
	if err := c.admin(peers[0]).ClusterMeet(ctx, n.ip.String(), "6379").Err(); err != nil {
		t.Fatalf("testredis: CLUSTER MEET %s: %v", n.Name, err)
	}
	c.mu.Lock()
	c.nodes = append(c.nodes, n)
	c.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	c.waitKnown(t, deadline, append(peers, n))
	// A new primary reports cluster_state:ok only a while after its start
	// (2 s in Redis 7.0), and refuses to import slots until then.
	c.waitHealthy(t, deadline, nil)
	return n
}

// MigrateSlot moves slot from its owner from to the primary to, with its
// keys, as live resharding does (and as it can run under load: clients
// follow ASK and MOVED redirections): CLUSTER SETSLOT IMPORTING on to,
// MIGRATING on from, CLUSTER GETKEYSINSLOT and MIGRATE ... KEYS until from
// has no key left in the slot, then CLUSTER SETSLOT NODE on to, from and
// every other primary. It returns once every node that answers names to as
// the owner.
func (c *Cluster) MigrateSlot(t testing.TB, slot int, from, to *Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if v, err := c.viewOf(ctx, from); err != nil {
		t.Fatalf("testredis: MigrateSlot: %s: %v", from.Name, err)
	} else if v.owner(slot) != from.ID {
		t.Fatalf("testredis: MigrateSlot: slot %d is not %s's (owner %q)", slot, from.Name, v.owner(slot))
	}
	setslot := func(n *Node, args ...any) {
		t.Helper()
		if err := c.admin(n).Do(ctx, append([]any{"CLUSTER", "SETSLOT", slot}, args...)...).Err(); err != nil {
			t.Fatalf("testredis: CLUSTER SETSLOT %d %v on %s: %v", slot, args, n.Name, err)
		}
	}
	setslot(to, "IMPORTING", from.ID)
	setslot(from, "MIGRATING", to.ID)
	for moved := 0; ; {
		keys, err := c.admin(from).ClusterGetKeysInSlot(ctx, slot, 1000).Result()
		if err != nil {
			t.Fatalf("testredis: CLUSTER GETKEYSINSLOT %d on %s: %v", slot, from.Name, err)
		}
		if len(keys) == 0 {
			break
		}
		args := []any{"MIGRATE", to.ip.String(), 6379, "", 0, 10000, "KEYS"}
		for _, k := range keys {
			args = append(args, k)
		}
		if err := c.admin(from).Do(ctx, args...).Err(); err != nil {
			t.Fatalf("testredis: MIGRATE %d keys of slot %d from %s to %s (%d moved): %v", len(keys), slot, from.Name, to.Name, moved, err)
		}
		moved += len(keys)
	}
	setslot(to, "NODE", to.ID)
	setslot(from, "NODE", to.ID)
	for _, p := range c.Primaries(ctx) {
		if p != to && p != from {
			setslot(p, "NODE", to.ID)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := func() error {
			for _, n := range c.answering(nil) {
				v, err := c.viewOf(ctx, n)
				if err != nil {
					return err
				}
				if o := v.owner(slot); o != to.ID {
					return fmt.Errorf("%s says slot %d is %q's", n.Name, slot, o)
				}
			}
			return nil
		}()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("testredis: MigrateSlot %d to %s: %v", slot, to.Name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// WaitFailover waits until the slots of old (a primary that was killed,
// paused or cut off) are owned by another node, and the cluster is
// healthy again in the views of the nodes that answer (see WaitHealthy;
// old does not count, even if it answers), and returns the new owner.
// Call it soon after the fault: it reads old's slots from the cluster's
// view, which keeps them until the failover (at least NodeTimeout).
func (c *Cluster) WaitFailover(t testing.TB, old *Node, timeout time.Duration) *Node {
	t.Helper()
	deadline := time.Now().Add(timeout)
	v, err := c.anyView(context.Background(), old)
	if err != nil {
		t.Fatalf("testredis: WaitFailover: %v", err)
	}
	cn, ok := v.byID(old.ID)
	if !ok || len(cn.slots) == 0 {
		t.Fatalf("testredis: WaitFailover: %s owns no slots in the cluster's view: nothing to fail over (it was failed over already, or never a primary)", old.Name)
	}
	slot := cn.slots[0][0]
	var promoted *Node
	for {
		err := c.check(context.Background(), c.answering(old), func(v view) error {
			o := v.owner(slot)
			if o == old.ID {
				return fmt.Errorf("%s still owns slot %d", old.Name, slot)
			}
			if promoted = c.nodeByID(o); promoted == nil {
				return fmt.Errorf("slot %d is owned by unknown node %q", slot, o)
			}
			return nil
		})
		if err == nil {
			return promoted
		}
		if time.Now().After(deadline) {
			t.Fatalf("testredis: no failover of %s within %v: %v", old.Name, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// PublishSent returns the sum of cluster_stats_messages_publish_sent (the
// cluster bus messages that carry a classic PUBLISH to every other node)
// over the nodes that answer. It only grows while no node restarts: with
// sharded pub/sub (SPUBLISH) it does not grow at all.
func (c *Cluster) PublishSent(ctx context.Context) int64 {
	return c.infoSum(ctx, "cluster_stats_messages_publish_sent")
}

// PublishShardSent is PublishSent for sharded pub/sub
// (cluster_stats_messages_publishshard_sent: an SPUBLISH forwarded to the
// replicas of the slot's shard).
func (c *Cluster) PublishShardSent(ctx context.Context) int64 {
	return c.infoSum(ctx, "cluster_stats_messages_publishshard_sent")
}

// infoSum sums a CLUSTER INFO field over the nodes that answer (a node
// that has sent nothing of the kind has no such line: 0).
func (c *Cluster) infoSum(ctx context.Context, field string) int64 {
	var sum int64
	for _, n := range c.answering(nil) {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		info, err := c.admin(n).ClusterInfo(cctx).Result()
		cancel()
		if err != nil {
			continue
		}
		for line := range strings.SplitSeq(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
				k, _ := strconv.ParseInt(v, 10, 64)
				sum += k
			}
		}
	}
	return sum
}
