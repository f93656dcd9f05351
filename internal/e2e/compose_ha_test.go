package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-sse/herald/internal/testredis"
	"github.com/redis/go-redis/v9"
)

var sentinelImage = envOr("HERALD_SENTINEL_IMAGE", "herald-sentinel:local")

// composeProject is one compose project of the deployment files, run as a
// user would (the machine's compose command), removed with its volumes at
// cleanup; its logs are printed when the test failed.
type composeProject struct {
	t       *testing.T
	cmd     []string // the compose command (composeCommand)
	project string
	args    []string // -f FILE..., --profile P...
	env     []string
}

func newCompose(t *testing.T, project string, env []string, args ...string) *composeProject {
	t.Helper()
	p := &composeProject{t: t, cmd: composeCommand(t), project: project, args: args, env: append(os.Environ(), env...)}
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := p.run(30*time.Second, "logs", "--tail", "30")
			t.Logf("compose logs:\n%s", out)
		}
		if out, err := p.run(2*time.Minute, "down", "-v", "--remove-orphans", "-t", "2"); err != nil {
			t.Errorf("compose down: %v\n%s", err, out)
		}
	})
	return p
}

// run runs a compose subcommand of the project and returns its output.
func (p *composeProject) run(within time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	full := append(append(append(slices.Clone(p.cmd[1:]), "-p", p.project), p.args...), args...)
	cmd := exec.CommandContext(ctx, p.cmd[0], full...)
	cmd.Env = p.env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// must runs a compose subcommand and fails the test if it fails.
func (p *composeProject) must(within time.Duration, args ...string) string {
	p.t.Helper()
	out, err := p.run(within, args...)
	if err != nil {
		p.t.Fatalf("compose %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// ip returns the address of service's container on the project's "back"
// network (which the host reaches directly on Linux).
func (p *composeProject) ip(service string) string {
	p.t.Helper()
	id := strings.TrimSpace(p.must(30*time.Second, "ps", "-q", service))
	out, err := exec.Command("docker", "inspect", "-f",
		fmt.Sprintf(`{{(index .NetworkSettings.Networks %q).IPAddress}}`, p.project+"_back"), id).CombinedOutput()
	ip := strings.TrimSpace(string(out))
	if err != nil || net.ParseIP(ip) == nil {
		p.t.Fatalf("address of %s (%q): %v %s", service, id, err, out)
	}
	return ip
}

// waitFleet waits until HAProxy has the three replicas up; a replica that
// refuses to start ("cannot start" in its log) fails the test at once with
// its reason.
func (p *composeProject) waitFleet(c *cluster, within time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(within)
	for next := time.Now(); ; {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		n := c.upServers(ctx)
		cancel()
		if n == 3 {
			return
		}
		if time.Now().After(next) {
			next = time.Now().Add(3 * time.Second)
			if out, _ := p.run(30*time.Second, "logs", "--tail", "3", "herald1"); strings.Contains(out, `"cannot start"`) {
				p.t.Fatalf("herald1 does not start:\n%s", out)
			}
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("timed out after %v waiting for HAProxy with 3 replicas up (%d up)", within, n)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// haPublisher publishes through the load balancer, one goroutine per
// topic, each retrying an event (every attempt with its own payload) until
// one attempt succeeds.
type haPublisher struct {
	base string
	http *http.Client
	wg   sync.WaitGroup

	mu         sync.Mutex
	acked      map[string]string      // payload -> ID, of every successful attempt
	okAt       map[string][]time.Time // topic -> when its publishes succeeded
	maxAttempt time.Duration          // the longest attempt, failed or not
	slowest    string
	count      atomic.Int64
	fails      atomic.Int64
}

func newHAPublisher(base string) *haPublisher {
	return &haPublisher{base: base, http: &http.Client{Timeout: 20 * time.Second}, acked: map[string]string{}, okAt: map[string][]time.Time{}}
}

func (p *haPublisher) attempt(ctx context.Context, topic, data string) (string, error) {
	form := url.Values{"topic": {topic}, "data": {data}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.base+"/publish", strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := p.http.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var body struct{ ID, Error string }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return "", fmt.Errorf("%d, %v", resp.StatusCode, err)
	}
	if resp.StatusCode != http.StatusOK || body.ID == "" {
		return "", fmt.Errorf("%d %s", resp.StatusCode, body.Error)
	}
	return body.ID, nil
}

// start publishes to topic every interval until ctx ends.
func (p *haPublisher) start(ctx context.Context, topic string, interval time.Duration) {
	p.wg.Go(func() {
		for seq := 0; ; seq++ {
			for try := 0; ; try++ {
				if ctx.Err() != nil {
					return
				}
				data := payload(topic, 0, seq, try)
				began := time.Now()
				id, err := p.attempt(ctx, topic, data)
				took := time.Since(began)
				if ctx.Err() != nil {
					return // a cancelled attempt may or may not have published
				}
				p.mu.Lock()
				if took > p.maxAttempt {
					p.maxAttempt, p.slowest = took, data+": ok"
					if err != nil {
						p.slowest = data + ": " + err.Error()
					}
				}
				if err == nil {
					p.acked[data] = id
					p.okAt[topic] = append(p.okAt[topic], time.Now())
				}
				p.mu.Unlock()
				if err == nil {
					p.count.Add(1)
					break
				}
				p.fails.Add(1)
				time.Sleep(100 * time.Millisecond)
			}
			time.Sleep(interval)
		}
	})
}

// waitCount waits until n events have been published in all.
func (p *haPublisher) waitCount(t *testing.T, n int64, within time.Duration, what string) {
	t.Helper()
	poll(t, within, fmt.Sprintf("%d events published (%s)", n, what), func() bool { return p.count.Load() >= n })
}

// waitTopics waits until every topic has had n successful publishes
// after since.
func (p *haPublisher) waitTopics(t *testing.T, topics []string, since time.Time, n int, within time.Duration, what string) {
	t.Helper()
	poll(t, within, fmt.Sprintf("%d events published to every topic (%s)", n, what), func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, tp := range topics {
			k := 0
			for _, at := range p.okAt[tp] {
				if at.After(since) {
					k++
				}
			}
			if k < n {
				return false
			}
		}
		return true
	})
}

// maxGap returns the longest time between two successful publishes of
// topic after since (or between since and the first).
func (p *haPublisher) maxGap(topic string, since time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	var gap time.Duration
	prev := since
	for _, at := range p.okAt[topic] {
		if at.Before(since) {
			continue
		}
		gap = max(gap, at.Sub(prev))
		prev = at
	}
	return gap
}

// readStream reads topic's whole history from a Redis (a primary): what
// every client must end up with.
func readStream(t testing.TB, rdb redis.Cmdable, topic string) []entry {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	base := "herald:{" + topic + "}"
	epoch, err := rdb.Get(ctx, base+":e").Result()
	if err != nil {
		t.Fatalf("epoch of %s: %v", topic, err)
	}
	msgs, err := rdb.XRange(ctx, base+":s", "-", "+").Result()
	if err != nil {
		t.Fatalf("XRANGE %s: %v", topic, err)
	}
	out := make([]entry, len(msgs))
	for i, m := range msgs {
		d, _ := m.Values["d"].(string)
		out[i] = entry{ID: epoch + "-" + m.ID, Data: d}
	}
	return out
}

// waitDelivered waits until every (single-topic) subscriber's last event
// is the last of its topic's stream.
func waitDelivered(t *testing.T, subs []*subscriber, logs map[string][]entry, within time.Duration) {
	t.Helper()
	poll(t, within, "every subscriber to reach the end of its stream", func() bool {
		for _, s := range subs {
			log := logs[s.Topics[0]]
			events, _ := s.received()
			if len(log) > 0 && (len(events) == 0 || events[len(events)-1].ID != log[len(log)-1].ID) {
				return false
			}
		}
		return true
	})
}

// verifyHA checks what failover allows and nothing more. A subscriber that
// got no herald.reset has exactly its topic's stream, in order, once, with
// the stream's IDs; one that got resets has, after the last one, a gap-free
// tail of the stream. An acknowledged publish missing from its stream (a
// failover lost it) must have made every subscriber of its topic get a
// reset: never a silent gap.
func verifyHA(t *testing.T, subs []*subscriber, logs map[string][]entry, acked map[string]string) {
	t.Helper()
	inStream := map[string]string{}
	for _, l := range logs {
		for _, e := range l {
			inStream[e.Data] = e.ID
		}
	}
	lost := map[string]int{}
	for data, id := range acked {
		if inStream[data] != id {
			lost[topicOf(data)]++
		}
	}
	for tp, n := range lost {
		t.Logf("%d acknowledged events of %s are not in its stream (lost in the failover)", n, tp)
	}
	resets := 0
	for i, s := range subs {
		s.mu.Lock()
		events, rs, at := slices.Clone(s.events), slices.Clone(s.resets), slices.Clone(s.resetAt)
		s.mu.Unlock()
		tp := s.Topics[0]
		log := logs[tp]
		if len(rs) == 0 {
			if lost[tp] > 0 {
				t.Errorf("subscriber %d on %s: %d acknowledged events are gone from the stream and no herald.reset said so", i, tp, lost[tp])
			}
			if msg := compareLog(events, log, true); msg != "" {
				t.Errorf("subscriber %d on %s: %s", i, tp, msg)
			}
			continue
		}
		resets++
		t.Logf("subscriber %d on %s: herald.reset %v after %v events", i, tp, rs, at)
		tail := events[at[len(at)-1]:]
		if len(tail) > len(log) {
			t.Errorf("subscriber %d on %s: %d events after its last reset, the stream has %d", i, tp, len(tail), len(log))
		} else if msg := compareLog(tail, log[len(log)-len(tail):], true); msg != "" {
			t.Errorf("subscriber %d on %s, after its last reset: %s", i, tp, msg)
		}
	}
	if resets > 0 {
		t.Logf("%d of %d subscribers got a herald.reset", resets, len(subs))
	}
}

// maxPublish bounds one POST /publish through HAProxy during a failover:
// herald answers within its --publish-timeout (5 s; 503 past it), and
// HAProxy re-sends a request answered 503 up to 3 times (haproxy.cfg:
// retries 3, retry-on ... 503), so a publisher may wait 4 × 5 s before
// its answer (a 503 or, often, the ID once a retry lands after the
// failover).
const maxPublish = 4*5*time.Second + 2*time.Second

// haStreams subscribes perTopic clients to each topic through lb and
// waits until all are connected.
func haStreams(t *testing.T, ctx context.Context, lb string, topics []string, perTopic int) []*subscriber {
	t.Helper()
	var subs []*subscriber
	for _, tp := range topics {
		for range perTopic {
			subs = append(subs, subscribe(ctx, lb, []string{tp}))
		}
	}
	poll(t, 30*time.Second, "every subscriber connected", func() bool {
		for _, s := range subs {
			if s.opens.Load() == 0 {
				return false
			}
		}
		return true
	})
	return subs
}

// haNet returns a random HERALD_REDIS_NET: a /24 of the test's own, away
// from testredis's 10.200-249.x.0 networks.
func haNet() string { return fmt.Sprintf("10.%d.%d", 250+rand.IntN(5), rand.IntN(256)) }

// TestComposeSentinel runs deployments/compose.sentinel.yaml as a user
// would: 20 clients on two topics through HAProxy while events are
// published through it; the primary is stopped (docker compose stop): every
// publish answers within seconds (see maxPublish), the sentinels promote a
// replica, publishing resumes within 30 s, the old
// primary comes back as a replica, and every client ends with its topic's
// whole stream once, in order — or was told with herald.reset.
func TestComposeSentinel(t *testing.T) {
	needDocker(t, heraldImage, redisImage, sentinelImage, haproxyImage)
	hapPort, statsPort := freePort(t), freePort(t)
	prefix := haNet()
	p := newCompose(t, fmt.Sprintf("heralde2e%ds", os.Getpid()), []string{
		"HERALD_PORT=" + strconv.Itoa(hapPort),
		"HERALD_STATS_PORT=" + strconv.Itoa(statsPort),
		"HERALD_REDIS_NET=" + prefix,
	}, "-f", deployDir+"/compose.sentinel.yaml")
	start := time.Now()
	p.must(3*time.Minute, "up", "-d", "--no-build")
	c := &cluster{t: t, LB: fmt.Sprintf("http://127.0.0.1:%d", hapPort), lbStats: fmt.Sprintf("http://127.0.0.1:%d/", statsPort), lbKind: haproxy}
	p.waitFleet(c, 90*time.Second)
	t.Logf("compose.sentinel.yaml up in %v", time.Since(start).Round(time.Millisecond))

	// The file's fixed addresses, which the sentinels hand out.
	svc := map[string]string{prefix + ".11": "redis1", prefix + ".12": "redis2", prefix + ".13": "redis3"}
	sentinel := redis.NewSentinelClient(&redis.Options{Addr: prefix + ".21:26379", MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: 2 * time.Second})
	t.Cleanup(func() { sentinel.Close() })
	primary := func() string {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		a, err := sentinel.GetMasterAddrByName(ctx, "herald").Result()
		if err != nil {
			return ""
		}
		return svc[a[0]]
	}
	old := primary()
	if old != "redis1" {
		t.Fatalf("the sentinels name %q as the primary, want redis1", old)
	}
	// A failover needs every sentinel to know the replicas (from the
	// primary's INFO, every 10 s) and the other sentinels (hello
	// messages): a primary stopped before that is not replaced at all.
	for i := 1; i <= 3; i++ {
		sc := redis.NewSentinelClient(&redis.Options{Addr: fmt.Sprintf("%s.%d:26379", prefix, 20+i), MaxRetries: -1, DialTimeout: time.Second})
		poll(t, 60*time.Second, fmt.Sprintf("sentinel%d to know 2 replicas and 2 other sentinels", i), func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			rs, err1 := sc.Replicas(ctx, "herald").Result()
			ss, err2 := sc.Sentinels(ctx, "herald").Result()
			return err1 == nil && err2 == nil && len(rs) == 2 && len(ss) == 2
		})
		sc.Close()
	}
	t.Logf("the sentinels know the topology after %v", time.Since(start).Round(time.Millisecond))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	topics := []string{"sentinel-a", "sentinel-b"}
	subs := haStreams(t, ctx, c.LB, topics, 10)
	pub := newHAPublisher(c.LB)
	pubCtx, stopPub := context.WithCancel(ctx)
	defer stopPub()
	for _, tp := range topics {
		pub.start(pubCtx, tp, 50*time.Millisecond)
	}
	pub.waitCount(t, 100, time.Minute, "before the failover")

	stopped := time.Now()
	p.must(time.Minute, "stop", "-t", "10", old)
	var promoted string
	poll(t, 60*time.Second, "the sentinels to promote a replica", func() bool {
		promoted = primary()
		return promoted != "" && promoted != old
	})
	pub.waitTopics(t, topics, time.Now(), 10, 30*time.Second, "after the promotion")
	t.Logf("%s stopped: %s promoted after %v; publishing resumed (longest gap %v on %s, %v on %s)", old, promoted,
		time.Since(stopped).Round(time.Millisecond), pub.maxGap(topics[0], stopped).Round(time.Millisecond), topics[0],
		pub.maxGap(topics[1], stopped).Round(time.Millisecond), topics[1])
	for _, tp := range topics {
		if g := pub.maxGap(tp, stopped); g > 30*time.Second {
			t.Errorf("no publish to %s succeeded for %v after the primary stopped", tp, g)
		}
	}

	// The old primary comes back as a replica of the new one.
	p.must(time.Minute, "start", old)
	oldClient := redis.NewClient(&redis.Options{Addr: net.JoinHostPort(p.ip(old), "6379"), MaxRetries: -1, DialTimeout: time.Second})
	t.Cleanup(func() { oldClient.Close() })
	poll(t, 60*time.Second, old+" to rejoin as a replica", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		info, err := oldClient.Info(ctx, "replication").Result()
		return err == nil && syncedReplica(info)
	})
	pub.waitTopics(t, topics, time.Now(), 10, 30*time.Second, "after the old primary rejoined")
	stopPub()
	pub.wg.Wait()
	pub.mu.Lock()
	slowest, longest := pub.slowest, pub.maxAttempt
	pub.mu.Unlock()
	t.Logf("%d events published, %d failed attempts; the longest attempt took %v (%s)", pub.count.Load(), pub.fails.Load(), longest.Round(time.Millisecond), slowest)
	if longest > maxPublish {
		t.Errorf("a publish took %v (%s): during a failover publishing must answer within seconds", longest, slowest)
	}

	now := primary()
	if now == "" {
		t.Fatal("no sentinel names a primary at the end")
	}
	rdb := redis.NewClient(&redis.Options{Addr: net.JoinHostPort(p.ip(now), "6379")})
	t.Cleanup(func() { rdb.Close() })
	logs := map[string][]entry{}
	for _, tp := range topics {
		logs[tp] = readStream(t, rdb, tp)
	}
	waitDelivered(t, subs, logs, 60*time.Second)
	stopAll(t, cancel, subs)
	verifyHA(t, subs, logs, pub.acked)
}

// TestComposeCluster runs deployments/compose.cluster.yaml as a user
// would: 12 clients on six topics spread over the three shards, connected
// through HAProxy, while events are published through it; the primary of
// one shard is killed (SIGKILL): every publish answers within seconds, its
// replica takes over, publishing to that shard resumes within 30 s while
// the other shards' topics go on without a pause, the killed node rejoins
// as a replica, and every client ends with its topic's whole stream once,
// in order — or was told with herald.reset. No node sends a classic
// PUBLISH over the cluster bus (cluster_stats_messages_publish_sent stays
// put): herald's fan-out is sharded pub/sub.
func TestComposeCluster(t *testing.T) {
	needDocker(t, heraldImage, redisImage, haproxyImage)
	if out, err := exec.Command("docker", "run", "--rm", "--entrypoint", "/bin/sh", redisImage, "-c", "redis-cli --version").CombinedOutput(); err != nil {
		unavailable(t, "image %s has no /bin/sh or redis-cli, which compose.cluster.yaml's redis-init needs (%v: %s); rebuild it with %s redis", redisImage, err, bytes.TrimSpace(out), imagesScript)
	}
	hapPort, statsPort := freePort(t), freePort(t)
	prefix := haNet()
	p := newCompose(t, fmt.Sprintf("heralde2e%dc", os.Getpid()), []string{
		"HERALD_PORT=" + strconv.Itoa(hapPort),
		"HERALD_STATS_PORT=" + strconv.Itoa(statsPort),
		"HERALD_REDIS_NET=" + prefix,
	}, "-f", deployDir+"/compose.cluster.yaml")
	start := time.Now()
	p.must(3*time.Minute, "up", "-d", "--no-build")
	c := &cluster{t: t, LB: fmt.Sprintf("http://127.0.0.1:%d", hapPort), lbStats: fmt.Sprintf("http://127.0.0.1:%d/", statsPort), lbKind: haproxy}
	p.waitFleet(c, 90*time.Second)
	t.Logf("compose.cluster.yaml up in %v (nodes at %s.11-16)", time.Since(start).Round(time.Millisecond), prefix)

	// The nodes, straight from the host, at their fixed addresses.
	svc := map[string]string{} // ip:port -> service
	nodes := map[string]*redis.Client{}
	var addrs []string
	for i := 1; i <= 6; i++ {
		a := fmt.Sprintf("%s.%d:6379", prefix, 10+i)
		svc[a] = fmt.Sprintf("redis%d", i)
		nodes[a] = redis.NewClient(&redis.Options{Addr: a, MaxRetries: -1, DialTimeout: 500 * time.Millisecond, ReadTimeout: time.Second})
		addrs = append(addrs, a)
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			n.Close()
		}
	})
	// `up` returns with the cluster able to survive a primary's loss: every
	// replica has completed its first sync. A replica that never has
	// refuses to take over ("Disconnected from master for longer than
	// allowed"), and the shard stays without a primary.
	replicas := 0
	for _, a := range addrs {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		info, err := nodes[a].Info(ctx, "replication").Result()
		cancel()
		if err != nil {
			t.Fatalf("%s: INFO replication: %v", svc[a], err)
		}
		if strings.Contains(info, "role:slave") {
			replicas++
			if !syncedReplica(info) {
				t.Errorf("%s is a replica whose link to its primary is not up once `up` has returned: its shard could not fail over\n%s", svc[a], info)
			}
		}
	}
	if replicas != 3 {
		t.Errorf("%d replicas once `up` has returned, want 3", replicas)
	}
	if t.Failed() {
		t.FailNow()
	}
	// owner returns the address of the primary of slot in the view of the
	// first node but skip that answers.
	owner := func(slot int, skip string) string {
		for _, a := range addrs {
			if a == skip {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			shards, err := nodes[a].ClusterShards(ctx).Result()
			cancel()
			if err != nil {
				continue
			}
			for _, sh := range shards {
				for _, r := range sh.Slots {
					if int(r.Start) > slot || slot > int(r.End) {
						continue
					}
					for _, n := range sh.Nodes {
						if n.Role == "master" && n.Health == "online" {
							return net.JoinHostPort(n.IP, strconv.FormatInt(n.Port, 10))
						}
					}
				}
			}
		}
		return ""
	}
	publishSent := func() map[string]int64 {
		out := map[string]int64{}
		for a, n := range nodes {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			info, err := n.ClusterInfo(ctx).Result()
			cancel()
			if err != nil {
				continue
			}
			out[a] = 0
			for line := range strings.SplitSeq(info, "\n") {
				if v, ok := strings.CutPrefix(strings.TrimSpace(line), "cluster_stats_messages_publish_sent:"); ok {
					out[a], _ = strconv.ParseInt(v, 10, 64)
				}
			}
		}
		return out
	}

	// Two topics per shard.
	perShard := map[string][]string{}
	var topics []string
	for i := 0; len(topics) < 6; i++ {
		tp := fmt.Sprintf("cluster-%d", i)
		o := owner(testredis.Slot(tp), "")
		if o == "" {
			t.Fatal("no node answers CLUSTER SLOTS")
		}
		if len(perShard[o]) < 2 {
			perShard[o] = append(perShard[o], tp)
			topics = append(topics, tp)
		}
	}
	sentBefore := publishSent()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	subs := haStreams(t, ctx, c.LB, topics, 2)
	pub := newHAPublisher(c.LB)
	pubCtx, stopPub := context.WithCancel(ctx)
	defer stopPub()
	for _, tp := range topics {
		pub.start(pubCtx, tp, 100*time.Millisecond)
	}
	pub.waitCount(t, 150, time.Minute, "before the failover")

	victimAddr := owner(testredis.Slot(topics[0]), "")
	victim := svc[victimAddr]
	killed := time.Now()
	p.must(time.Minute, "kill", victim)
	var promoted string
	poll(t, 60*time.Second, "a replica to take over "+victim+"'s slots", func() bool {
		promoted = owner(testredis.Slot(topics[0]), victimAddr)
		return promoted != "" && promoted != victimAddr
	})
	failedOver := time.Since(killed)
	pub.waitTopics(t, topics, time.Now(), 5, 30*time.Second, "after the failover")
	for _, tp := range topics {
		gap := pub.maxGap(tp, killed)
		onVictim := slices.Contains(perShard[victimAddr], tp)
		t.Logf("%s (shard of %s): longest gap between publishes %v", tp, svc[owner(testredis.Slot(tp), victimAddr)], gap.Round(time.Millisecond))
		switch {
		case onVictim && gap > 30*time.Second:
			t.Errorf("no publish to %s succeeded for %v after its primary was killed", tp, gap)
		case !onVictim && gap > 3*time.Second:
			t.Errorf("publishing to %s, on a healthy shard, paused for %v while %s failed over: one shard's failover must not stall the others", tp, gap, victim)
		}
	}
	t.Logf("%s killed: %s took over its slots within %v", victim, svc[promoted], failedOver.Round(time.Millisecond))

	// The killed node comes back as a replica.
	p.must(time.Minute, "start", victim)
	poll(t, 60*time.Second, victim+" to rejoin as a replica", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		info, err := nodes[victimAddr].Info(ctx, "replication").Result()
		return err == nil && syncedReplica(info)
	})
	pub.waitTopics(t, topics, time.Now(), 5, 30*time.Second, "after the killed node rejoined")
	stopPub()
	pub.wg.Wait()
	pub.mu.Lock()
	slowest, longest := pub.slowest, pub.maxAttempt
	pub.mu.Unlock()
	t.Logf("%d events published, %d failed attempts; the longest attempt took %v (%s)", pub.count.Load(), pub.fails.Load(), longest.Round(time.Millisecond), slowest)
	if longest > maxPublish {
		t.Errorf("a publish took %v (%s): during a failover publishing must answer within seconds", longest, slowest)
	}

	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	t.Cleanup(func() { cc.Close() })
	logs := map[string][]entry{}
	for _, tp := range topics {
		logs[tp] = readStream(t, cc, tp)
	}
	waitDelivered(t, subs, logs, 60*time.Second)
	stopAll(t, cancel, subs)
	verifyHA(t, subs, logs, pub.acked)

	// Sharded pub/sub only: no node broadcast a PUBLISH (the killed node's
	// counters restarted with it).
	for a, after := range publishSent() {
		if before, ok := sentBefore[a]; ok && a != victimAddr && after != before {
			t.Errorf("%s sent %d classic PUBLISH messages over the cluster bus during the test: herald must fan out with SPUBLISH", svc[a], after-before)
		}
	}
}

// syncedReplica reports whether INFO replication's answer is a replica's
// whose link to its primary is up.
func syncedReplica(info string) bool {
	return strings.Contains(info, "role:slave") && strings.Contains(info, "master_link_status:up")
}
