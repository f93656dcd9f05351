package faults

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-sse/herald/internal/faultproxy"
	"github.com/herald-sse/herald/internal/testredis"
	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/broker/redisbroker"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

// Knobs (environment variables) of TestFaults.
const (
	// envSeeds: comma-separated seeds to run (overrides envCount).
	envSeeds = "HERALD_FAULT_SEEDS"
	// envCount: run seeds 1..N. Default 2 (the smoke run of go test ./...).
	envCount = "HERALD_FAULT_SCHEDULES"
	// envDuration: keep running schedules (cycling through the seeds, each
	// cycle with new topics) until this much time has passed (soak).
	envDuration = "HERALD_FAULT_DURATION"
	// envKinds: comma-separated fault kinds to draw from (default all).
	envKinds = "HERALD_FAULT_KINDS"
	// envBudget: the steps' total duration per schedule (default 3s for
	// the smoke run, 7s otherwise).
	envBudget = "HERALD_FAULT_BUDGET"
	// envLanes: schedules run in parallel, each lane on its own Redis.
	envLanes = "HERALD_FAULT_LANES"
	// envLog: "1" shows the brokers' warnings.
	envLog = "HERALD_FAULT_LOG"
)

const (
	nBrokers    = 3 // brokers 0 and 1: pub/sub on its own proxy; 2: Config.URL
	nTopics     = 5
	nSubs       = 4
	nBrokerPubs = 2
	nRawPubs    = 1
	liveBound   = 4500 * time.Millisecond // deafness bound (issue 9: replaced within 3 s, then refilled)
	healGrace   = 3 * time.Second         // after a fault healed, before Quiet windows require liveness
	opTimeout   = 2 * time.Second         // a publish's deadline
	waitTimeout = 20 * time.Second        // catching up at the end; Redis answering after a restart
	historySize = 1_000_000               // trimming happens only where a schedule wants it
	publishTick = 8 * time.Millisecond    // per publisher
)

type config struct {
	seeds    []uint64
	duration time.Duration
	kinds    []Kind
	budget   time.Duration
	lanes    int
}

func loadConfig(t *testing.T) config {
	t.Helper()
	cfg := config{budget: 7 * time.Second, lanes: 1}
	count := 2
	if s := os.Getenv(envCount); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("%s=%q: want a positive number", envCount, s)
		}
		count = n
	} else if os.Getenv(envSeeds) == "" && os.Getenv(envDuration) == "" {
		cfg.budget = 3 * time.Second // the smoke run
	}
	for i := 1; i <= count; i++ {
		cfg.seeds = append(cfg.seeds, uint64(i))
	}
	if s := os.Getenv(envSeeds); s != "" {
		cfg.seeds = nil
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.ParseUint(strings.TrimSpace(f), 10, 64)
			if err != nil {
				t.Fatalf("%s=%q: %v", envSeeds, s, err)
			}
			cfg.seeds = append(cfg.seeds, n)
		}
	}
	var err error
	if cfg.kinds, err = ParseKinds(os.Getenv(envKinds)); err != nil {
		t.Fatalf("%s: %v", envKinds, err)
	}
	dur := func(name string, dst *time.Duration) {
		if s := os.Getenv(name); s != "" {
			d, err := time.ParseDuration(s)
			if err != nil || d <= 0 {
				t.Fatalf("%s=%q: want a positive Go duration", name, s)
			}
			*dst = d
		}
	}
	dur(envBudget, &cfg.budget)
	dur(envDuration, &cfg.duration)
	if s := os.Getenv(envLanes); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 8 {
			t.Fatalf("%s=%q: want 1-8", envLanes, s)
		}
		cfg.lanes = n
	}
	return cfg
}

// TestFaults runs seeded fault schedules against three redisbroker brokers,
// each behind its own toxiproxy proxies, on one Redis; see the package
// documentation. Without knobs it is a smoke run of two short schedules.
func TestFaults(t *testing.T) {
	cfg := loadConfig(t)
	// Registered first, so it runs last: after every schedule's proxies,
	// brokers and clients, and the Redis containers, are gone. (Per
	// schedule it cannot be: lanes run schedules concurrently.)
	ignore := goleak.IgnoreCurrent()
	// toxiproxy v2.5.0's toxics (latency, bandwidth: every Pipe ends with
	// an unconditional send to its stub's Output) can leave their
	// goroutine blocked on that send when the toxic is removed while its
	// link closes (seen in CI: "chan send" for a minute after the
	// schedule, LatencyToxic.Pipe once, BandwidthToxic.Pipe once). They are
	// the proxy library's goroutines, not herald's, and hold no herald
	// state: every goroutine a toxic runs (under ToxicStub.Run) is left
	// out of the check, whichever toxic it is.
	toxiproxyToxics := goleak.IgnoreAnyFunction("github.com/Shopify/toxiproxy/v2/toxics.(*ToxicStub).Run")
	// The same fault one step upstream: a link's reader (ToxicLink.read,
	// copying from the client's socket into the first toxic's channel)
	// blocks on that channel send when the toxic behind it stopped
	// reading. Seen in the full-hour soak of 2026-12-06: 12 such
	// goroutines in "chan send" for 4-49 minutes after 266 schedules, with
	// 0 violations; nothing of herald's on their stacks.
	toxiproxyLinks := goleak.IgnoreAnyFunction("github.com/Shopify/toxiproxy/v2.(*ToxicLink).read")
	t.Cleanup(func() {
		if err := goleak.Find(ignore, toxiproxyToxics, toxiproxyLinks); err != nil {
			t.Errorf("goroutines leaked: %v", err)
		}
	})
	start := time.Now()
	sum := newSummary()
	jobs := make(chan job)
	var wg sync.WaitGroup
	for l := range cfg.lanes {
		r := testredis.Start(t, testredis.WithPersistence())
		direct := redis.NewClient(&redis.Options{Addr: r.Addr, MaxRetries: -1, DialTimeout: time.Second})
		t.Cleanup(func() { direct.Close() })
		ln := &lane{n: l, redis: r, direct: direct}
		wg.Go(func() {
			for j := range jobs {
				t.Run(fmt.Sprintf("seed=%d", j.seed), func(t *testing.T) {
					res, sched := runSchedule(t, ln, j, cfg)
					sum.add(j.seed, sched, res)
					if len(res.Violations) > 0 {
						t.Errorf("%s\nreproduce: %s=%d %s=%s %s=%s go test -count=1 -run 'TestFaults' ./internal/faults",
							sched, envSeeds, j.seed, envBudget, cfg.budget, envKinds, kindList(cfg.kinds))
					}
				})
			}
		})
	}
	cycle := 0
feed:
	for {
		for _, s := range cfg.seeds {
			if cfg.duration > 0 && time.Since(start) > cfg.duration {
				break feed
			}
			jobs <- job{seed: s, cycle: cycle}
		}
		cycle++
		if cfg.duration == 0 {
			break
		}
	}
	close(jobs)
	wg.Wait()
	t.Logf("fault-injection summary (%v):\n%s", time.Since(start).Round(time.Second), sum)
}

func kindList(ks []Kind) string {
	s := make([]string, len(ks))
	for i, k := range ks {
		s[i] = string(k)
	}
	return strings.Join(s, ",")
}

type job struct {
	seed  uint64
	cycle int
}

type lane struct {
	n      int
	redis  *testredis.Redis
	direct *redis.Client
}

// summary accumulates results over schedules.
type summary struct {
	mu         sync.Mutex
	schedules  int
	published  int
	acked      int
	deliveries int
	sessions   int
	resets     map[string]int
	violations map[string][]uint64 // class -> seeds
	first      map[string]string   // class -> first example
}

func newSummary() *summary {
	return &summary{resets: map[string]int{}, violations: map[string][]uint64{}, first: map[string]string{}}
}

func (s *summary) add(seed uint64, sched Schedule, r Result) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.schedules++
	s.published += r.Published
	s.acked += r.Acked
	s.deliveries += r.Deliveries
	s.sessions += r.Sessions
	for k, v := range r.Resets {
		s.resets[k] += v
	}
	seen := map[string]bool{}
	for _, v := range r.Violations {
		if !seen[v.Class] {
			seen[v.Class] = true
			s.violations[v.Class] = append(s.violations[v.Class], seed)
		}
		if _, ok := s.first[v.Class]; !ok {
			s.first[v.Class] = fmt.Sprintf("seed %d: %s", seed, v)
		}
	}
}

func (s *summary) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "  schedules run:      %d\n", s.schedules)
	fmt.Fprintf(&b, "  events published:   %d attempted, %d acknowledged\n", s.published, s.acked)
	fmt.Fprintf(&b, "  sessions:           %d\n", s.sessions)
	fmt.Fprintf(&b, "  deliveries checked: %d\n", s.deliveries)
	fmt.Fprintf(&b, "  resets (reason/cause):")
	keys := make([]string, 0, len(s.resets))
	for k := range s.resets {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if len(keys) == 0 {
		b.WriteString(" none")
	}
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%d", k, s.resets[k])
	}
	b.WriteString("\n")
	n := 0
	for _, seeds := range s.violations {
		n += len(seeds)
	}
	fmt.Fprintf(&b, "  violations:         %d schedule(s) x class\n", n)
	classes := make([]string, 0, len(s.violations))
	for c := range s.violations {
		classes = append(classes, c)
	}
	sort.Strings(classes)
	for _, c := range classes {
		fmt.Fprintf(&b, "    %-20s seeds %v\n      e.g. %s\n", c, s.violations[c], truncate(s.first[c], 600))
	}
	return b.String()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// slot is one broker position: its proxies and the broker currently open
// there (nil while closed).
type slot struct {
	n     int
	split bool                // pub/sub on its own proxy (cmd and ps); else Config.URL through proxy
	cmd   *faultproxy.Switch  // split: command connections
	ps    *faultproxy.Switch  // split: the pub/sub connection
	proxy *faultproxy.Proxy   // !split
	mu    sync.Mutex          // guards b and clients
	b     *redisbroker.Broker // nil while closed
	cls   []*redis.Client
}

// proxies returns the proxies the broker's new and open connections go
// through.
func (s *slot) proxies() []*faultproxy.Proxy {
	if s.split {
		return []*faultproxy.Proxy{s.cmd.Current(), s.ps.Current()}
	}
	return []*faultproxy.Proxy{s.proxy}
}

func (s *slot) get() *redisbroker.Broker {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b
}

// splitClient is a go-redis client whose pub/sub connections come from a
// second client, so that they go through their own proxy.
type splitClient struct {
	*redis.Client
	ps *redis.Client
}

func (c splitClient) Subscribe(ctx context.Context, channels ...string) *redis.PubSub {
	return c.ps.Subscribe(ctx, channels...)
}

type harness struct {
	t      *testing.T
	lane   *lane
	seed   uint64
	topics []string
	slots  []*slot
	rec    *Record
	log    *slog.Logger

	gate sync.RWMutex // publishers hold it shared per publish; RestartEmpty exclusively

	mu        sync.Mutex // guards the fields below
	pubs      []Publish
	sessions  []*Session
	closes    []Window
	live      []Window
	timeline  []string
	subErrors []Violation

	nsess     atomic.Int64
	stopPub   chan struct{}
	finalCh   chan struct{}
	done      chan struct{}
	lastFault time.Time // end of the last fault healed (runner goroutine only)
}

func (h *harness) note(format string, args ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.timeline = append(h.timeline, time.Now().Format(timeFmt)+" "+fmt.Sprintf(format, args...))
}

func runSchedule(t *testing.T, ln *lane, j job, cfg config) (Result, Schedule) {
	sh := Shape{Brokers: nBrokers, PubSubBrokers: []int{0, 1}, Topics: nTopics, Kinds: cfg.kinds, Budget: cfg.budget, LiveBound: liveBound}
	sched := NewSchedule(j.seed, sh)
	t.Logf("%s", sched)
	h := &harness{
		t: t, lane: ln, seed: j.seed, rec: NewRecord(),
		stopPub: make(chan struct{}), finalCh: make(chan struct{}), done: make(chan struct{}),
	}
	h.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv(envLog) == "1" {
		h.log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	nonce := rand.Uint32()
	for i := range nTopics {
		h.topics = append(h.topics, fmt.Sprintf("f%d-%d-%x-%d", j.seed, j.cycle, nonce, i))
	}
	ctx := context.Background()
	// Start from an empty server: earlier schedules' keys only make the
	// append-only file longer.
	h.retry("FLUSHALL", func(ctx context.Context) error { return ln.direct.FlushAll(ctx).Err() })

	for i := range nBrokers {
		s := &slot{n: i, split: i < 2}
		if s.split {
			s.cmd = faultproxy.NewSwitch(t, ln.redis.Addr)
			s.ps = faultproxy.NewSwitch(t, ln.redis.Addr)
		} else {
			s.proxy = faultproxy.New(t, ln.redis.Addr)
		}
		h.open(s)
		h.slots = append(h.slots, s)
	}
	defer func() {
		for _, s := range h.slots {
			h.closeBroker(s)
		}
	}()

	rng := rand.New(rand.NewPCG(j.seed, 1))
	var pubs, subs sync.WaitGroup
	for k := range nBrokerPubs + nRawPubs {
		prng := rand.New(rand.NewPCG(j.seed, uint64(100+k)))
		pubs.Go(func() { h.publisher(k, k >= nBrokerPubs, prng) })
	}
	for k := range nSubs {
		srng := rand.New(rand.NewPCG(j.seed, uint64(200+k)))
		subs.Go(func() { h.subscriber(k, srng) })
	}
	stopAll := func() {
		select {
		case <-h.done:
			return
		default:
		}
		close(h.stopPub)
		pubs.Wait()
		close(h.done)
		subs.Wait()
	}
	defer stopAll() // also when a step fails the test

	// A little traffic before the first fault.
	h.wait(300 * time.Millisecond)
	h.lastFault = time.Now()
	for i, st := range sched.Steps {
		h.note("step %d: %s", i, st)
		h.step(ctx, st, rng)
		h.observeAll()
	}

	// Settle: every subscriber opens a final session, publishing goes on
	// for a while, then stops; every final session must catch up.
	h.note("settle")
	settle := time.Now()
	close(h.finalCh)
	h.wait(1500 * time.Millisecond)
	h.addLive(Window{Broker: -1, Start: maxTime(settle, h.lastFault.Add(healGrace)), End: time.Now(), What: "settle"})
	close(h.stopPub)
	pubs.Wait()
	h.observeAll()
	want := map[string]string{}
	for _, topic := range h.topics {
		if e := h.rec.Topic(topic).Current(); e != nil && e.LostAt.IsZero() && len(e.Entries) > 0 {
			want[topic] = e.Entries[len(e.Entries)-1].ID
		}
	}
	h.note("catching up to %v", want)
	deadline := time.Now().Add(waitTimeout)
	for !h.caughtUp(want) && time.Now().Before(deadline) {
		h.wait(20 * time.Millisecond)
	}
	close(h.done)
	subs.Wait()
	h.observeAll()

	h.mu.Lock()
	for _, s := range h.sessions {
		finals.Delete(s)
	}
	run := &Run{
		Record: h.rec, Sessions: h.sessions, Publishes: h.pubs, Closes: h.closes,
		Live: h.live, LiveBound: liveBound, FinalWant: want,
	}
	h.mu.Unlock()
	res := Check(run)
	res.Violations = append(res.Violations, h.subErrors...)
	t.Logf("published %d (acked %d), sessions %d, deliveries %d, resets %v, violations %d",
		res.Published, res.Acked, res.Sessions, res.Deliveries, res.Resets, len(res.Violations))
	if len(res.Violations) > 0 {
		classes := map[string]int{}
		for _, v := range res.Violations {
			classes[v.Class]++
		}
		t.Logf("violations by class: %v", classes)
		for i, v := range res.Violations {
			if i == 8 {
				t.Logf("... and %d more", len(res.Violations)-i)
				break
			}
			t.Logf("violation: %s", truncate(v.String(), 1500))
		}
		t.Logf("timeline:\n  %s", strings.Join(h.timeline, "\n  "))
	}
	return res, sched
}

// wait blocks for d (pacing, not synchronisation).
func (h *harness) wait(d time.Duration) {
	tm := time.NewTimer(d)
	defer tm.Stop()
	<-tm.C
}

// retry runs op until it succeeds or waitTimeout passes (Redis may be
// restarting; the direct client's pooled connections may be dead).
func (h *harness) retry(what string, op func(ctx context.Context) error) {
	h.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		err := op(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%s: %v", what, err)
		}
		h.wait(50 * time.Millisecond)
	}
}

func (h *harness) newClient(s *slot, sw *faultproxy.Switch) *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr: "redis", Dialer: sw.Dial, MaxRetries: -1, DialTimeout: time.Second,
	})
}

// open opens a broker in the slot.
func (h *harness) open(s *slot) {
	cfg := redisbroker.Config{HistorySize: historySize, Logger: h.log.With("broker", s.n)}
	var cls []*redis.Client
	if s.split {
		c, ps := h.newClient(s, s.cmd), h.newClient(s, s.ps)
		cls = []*redis.Client{c, ps}
		cfg.Client = splitClient{Client: c, ps: ps}
	} else {
		cfg.URL = "redis://" + s.proxy.Addr() + "/0"
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	b, err := redisbroker.New(ctx, cfg)
	cancel()
	if err != nil {
		h.t.Fatalf("broker %d: New: %v", s.n, err)
	}
	s.mu.Lock()
	s.b, s.cls = b, cls
	s.mu.Unlock()
}

// closeBroker closes the slot's broker (if open) and records the interval.
func (h *harness) closeBroker(s *slot) {
	s.mu.Lock()
	b, cls := s.b, s.cls
	s.mu.Unlock()
	if b == nil {
		return
	}
	start := time.Now()
	err := b.Close()
	h.mu.Lock()
	h.closes = append(h.closes, Window{Broker: s.n, Start: start, End: time.Now(), What: "close"})
	h.mu.Unlock()
	if err != nil {
		h.t.Logf("broker %d: Close: %v", s.n, err)
	}
	for _, c := range cls {
		c.Close()
	}
	s.mu.Lock()
	s.b, s.cls = nil, nil
	s.mu.Unlock()
}

func (h *harness) addLive(w Window) {
	if !w.Start.Before(w.End) {
		return
	}
	h.mu.Lock()
	h.live = append(h.live, w)
	h.mu.Unlock()
}

func (h *harness) must(err error) {
	h.t.Helper()
	if err != nil {
		h.t.Fatal(err)
	}
}

// step injects one fault, waits its duration and heals it.
func (h *harness) step(ctx context.Context, st Step, rng *rand.Rand) {
	start := time.Now()
	s := h.slots[st.Broker]
	r := h.lane.redis
	fault := true
	switch st.Kind {
	case PubSubBlackhole:
		old := s.ps.Current()
		h.must(s.ps.Flip())
		h.wait(st.Dur)
		h.addLive(Window{Broker: s.n, Start: start, End: time.Now(), What: "pubsub-blackhole"})
		h.must(old.CloseConnections())
		old.Clear()
	case Blackhole:
		ps := s.proxies()
		for _, p := range ps {
			h.must(p.Blackhole())
		}
		h.wait(st.Dur)
		for _, p := range ps {
			h.must(p.CloseConnections())
			p.Clear()
		}
	case Latency, Bandwidth:
		typ, attrs := "latency", map[string]any{"latency": st.Latency, "jitter": st.Jitter}
		if st.Kind == Bandwidth {
			typ, attrs = "bandwidth", map[string]any{"rate": st.Rate}
		}
		ps := s.proxies()
		for _, p := range ps {
			h.must(p.AddToxic("fault_down", typ, faultproxy.Downstream, attrs))
			h.must(p.AddToxic("fault_up", typ, faultproxy.Upstream, attrs))
		}
		h.wait(st.Dur)
		for _, p := range ps {
			p.Clear()
		}
	case Reset:
		ps := s.proxies()
		if st.RST {
			for _, p := range ps {
				h.must(p.AddToxic("fault_rst_up", "reset_peer", faultproxy.Upstream, map[string]any{"timeout": 0}))
				h.must(p.AddToxic("fault_rst_down", "reset_peer", faultproxy.Downstream, map[string]any{"timeout": 0}))
			}
			h.wait(st.Dur)
			for _, p := range ps {
				p.Clear()
			}
		} else {
			for _, p := range ps {
				h.must(p.CloseConnections())
			}
			h.wait(st.Dur)
		}
	case RestartKeep:
		r.Restart(h.t)
		h.wait(st.Dur)
	case RestartEmpty:
		// No publish runs while the record reads the logs to their end and
		// Redis forgets them, so the record knows exactly what was lost.
		func() {
			h.gate.Lock()
			defer h.gate.Unlock() // also when a Fatal ends the test here
			h.observeAll()
			h.rec.Lose(time.Now())
			h.retry("FLUSHALL", func(ctx context.Context) error {
				if err := h.lane.direct.FlushAll(ctx).Err(); err != nil {
					return err
				}
				return h.lane.direct.FunctionFlush(ctx).Err()
			})
			r.Restart(h.t)
		}()
		h.wait(st.Dur)
	case Pause:
		r.Pause(h.t)
		h.wait(st.Dur)
		r.Unpause(h.t)
	case CloseReopen:
		h.closeBroker(s)
		h.wait(st.Dur)
		h.open(s)
	case Trim:
		topic := h.topics[st.Topic]
		h.observe(topic)
		n := 0
		if e := h.rec.Topic(topic).Current(); e != nil {
			n = len(e.Entries)
		}
		keepFrom := n - int(st.Keep*float64(n))
		if sid, ok := h.rec.Trim(topic, keepFrom, time.Now()); ok {
			key := "herald:{" + topic + "}:s"
			h.retry("XTRIM", func(ctx context.Context) error {
				return h.lane.direct.XTrimMinID(ctx, key, sid.String()).Err()
			})
			h.note("trimmed %s before %s (kept %d of %d)", topic, sid, n-keepFrom, n)
		}
		h.wait(st.Dur)
	case Quiet:
		fault = false
		h.wait(st.Dur)
		h.addLive(Window{Broker: -1, Start: maxTime(start, h.lastFault.Add(healGrace)), End: time.Now(), What: "quiet"})
	}
	if fault {
		h.lastFault = time.Now()
	}
	h.note("healed %s", st.Kind)
}

// observe reads the topic's stream past what the record has, straight from
// Redis, and merges it.
func (h *harness) observe(topic string) {
	base := "herald:{" + topic + "}"
	h.retry("read "+topic, func(ctx context.Context) error {
		epoch, last, ok := h.rec.Last(topic)
		from := "-"
		if ok {
			from = "(" + last.String()
		}
		for range 2 {
			var get *redis.StringCmd
			var xr *redis.XMessageSliceCmd
			_, err := h.lane.direct.TxPipelined(ctx, func(p redis.Pipeliner) error {
				get = p.Get(ctx, base+":e")
				xr = p.XRange(ctx, base+":s", from, "+")
				return nil
			})
			if err != nil && !errors.Is(err, redis.Nil) {
				return err
			}
			e, err := get.Result()
			if errors.Is(err, redis.Nil) {
				return nil // no epoch: nothing published since Redis was emptied
			}
			if err != nil {
				return err
			}
			if ok && e != epoch && from != "-" {
				from = "-" // a new epoch: read it whole
				continue
			}
			msgs, err := xr.Result()
			if err != nil {
				return err
			}
			entries := make([]Entry, 0, len(msgs))
			for _, m := range msgs {
				sid, _ := ParseStreamID(m.ID)
				d, _ := m.Values["d"].(string)
				entries = append(entries, Entry{ID: e + "-" + m.ID, SID: sid, Data: d})
			}
			h.rec.Observe(topic, e, entries, time.Now())
			return nil
		}
		return nil
	})
}

func (h *harness) observeAll() {
	for _, topic := range h.topics {
		h.observe(topic)
	}
}

func closed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// publisher publishes until stopPub, through a random open broker, or with
// FCALL on the direct client (raw).
func (h *harness) publisher(k int, raw bool, rng *rand.Rand) {
	tick := time.NewTicker(publishTick)
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-h.stopPub:
			return
		case <-tick.C:
		}
		topic := h.topics[rng.IntN(len(h.topics))]
		data := fmt.Sprintf("s%d-p%d-%d", h.seed, k, n)
		s := h.slots[rng.IntN(len(h.slots))]
		h.gate.RLock()
		p := Publish{Topic: topic, Data: data, Via: -1, Start: time.Now()}
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		if raw {
			p.ID, p.Err = h.lane.direct.FCall(ctx, "herald_publish", []string{topic}, "raw", data).Text()
		} else if b := s.get(); b != nil {
			p.Via = s.n
			p.ID, p.Err = b.Publish(ctx, topic, broker.Message{Type: "ev", Data: data})
		} else {
			cancel()
			h.gate.RUnlock()
			continue
		}
		cancel()
		p.End = time.Now()
		h.gate.RUnlock()
		if p.Err != nil {
			p.ID = ""
		}
		h.mu.Lock()
		h.pubs = append(h.pubs, p)
		h.mu.Unlock()
	}
}

// sessionState is what a subscriber's running session exposes to the
// harness (for the final catch-up).
type sessionState struct {
	mu    sync.Mutex
	last  map[string]string
	ended bool
}

var finals sync.Map // *Session -> *sessionState

// subscriber opens sessions one after the other, each with a cursor built
// from what earlier sessions saw, until done. After finalCh it opens one
// last session and keeps it until done.
func (h *harness) subscriber(k int, rng *rand.Rand) {
	own := map[string]held{} // topic -> last position held
	var old []held           // older positions
	var prev []string
	for !closed(h.done) {
		final := closed(h.finalCh)
		s := h.newSession(k, rng, own, old, prev, final)
		sl := h.slots[rng.IntN(len(h.slots))]
		b := sl.get()
		if b == nil {
			h.wait(20 * time.Millisecond)
			continue
		}
		s.Broker = sl.n
		ctx, cancel := context.WithCancel(context.Background())
		s.Opened = time.Now()
		sub, err := b.Subscribe(ctx, s.Topics, s.Cursor)
		s.Returned = time.Now()
		if err != nil {
			cancel()
			if !errors.Is(err, broker.ErrClosed) {
				h.mu.Lock()
				h.subErrors = append(h.subErrors, Violation{Class: "subscribe-error", Detail: fmt.Sprintf("Subscribe(%q, %v) on broker %d: %v", s.Topics, s.Cursor, sl.n, err)})
				h.mu.Unlock()
			}
			h.wait(20 * time.Millisecond)
			continue
		}
		s.N = int(h.nsess.Add(1))
		h.mu.Lock()
		h.sessions = append(h.sessions, s)
		h.mu.Unlock()
		// Half the subscribers resume often, half hold long sessions (the
		// liveness check needs sessions open across a fault).
		d := time.Duration(300+rng.IntN(1700)) * time.Millisecond
		if k%2 == 1 {
			d = time.Duration(3000+rng.IntN(6000)) * time.Millisecond
		}
		h.read(s, sub, d, final)
		sub.Close()
		cancel()
		for _, topic := range s.Topics {
			if p, ok := lastPosition(s, topic); ok {
				if o, ok := own[topic]; ok && o.id != p.id {
					old = append(old, o)
					if len(old) > 40 {
						old = old[1:]
					}
				}
				own[topic] = p
			}
		}
		prev = s.Topics
	}
}

// held is a position a subscriber held, and since when.
type held struct {
	topic, id string
	at        time.Time
}

// lastPosition returns the position the session ended at for topic.
func lastPosition(s *Session, topic string) (held, bool) {
	for i := len(s.Items) - 1; i >= 0; i-- {
		if e := s.Items[i].Ev; e.Topic == topic {
			if e.Kind == broker.KindReset {
				return held{}, false
			}
			return held{topic: topic, id: e.ID, at: s.Items[i].At}, true
		}
	}
	return held{}, false
}

// read takes the session's items until d passed (or, for a final session,
// until done), or the subscription ended.
func (h *harness) read(s *Session, sub broker.Subscription, d time.Duration, final bool) {
	var st *sessionState
	if final {
		st = &sessionState{last: map[string]string{}}
		finals.Store(s, st)
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	stop := h.finalCh
	if final {
		timer.Stop()
		stop = h.done
	}
	var buf []*broker.Event
	for {
		items, err := sub.Take(buf[:0])
		now := time.Now()
		for _, e := range items {
			s.Items = append(s.Items, Item{Ev: e, At: now})
		}
		if st != nil && len(items) > 0 {
			st.mu.Lock()
			for _, e := range items {
				if e.ID != "" {
					st.last[e.Topic] = e.ID
				}
			}
			st.mu.Unlock()
		}
		clear(items)
		buf = items[:0]
		if err != nil {
			s.Err, s.Closed = err, now
			if st != nil {
				st.mu.Lock()
				st.ended = true
				st.mu.Unlock()
			}
			return
		}
		select {
		case <-sub.Ready():
		case <-timer.C:
			s.Closed = time.Now()
			return
		case <-stop:
			if final {
				s.Final = true
			} else {
				s.Closed = time.Now()
			}
			return
		}
	}
}

// caughtUp reports whether every final session (of this harness) has
// received want for each of its topics, or ended.
func (h *harness) caughtUp(want map[string]string) bool {
	h.mu.Lock()
	sessions := slices.Clone(h.sessions)
	h.mu.Unlock()
	n := 0
	for _, s := range sessions {
		v, ok := finals.Load(s)
		if !ok {
			continue
		}
		n++
		st := v.(*sessionState)
		st.mu.Lock()
		ok = st.ended
		if !ok {
			ok = true
			for _, topic := range s.Topics {
				if w := want[topic]; w != "" && st.last[topic] != w {
					ok = false
				}
			}
		}
		st.mu.Unlock()
		if !ok {
			return false
		}
	}
	return n >= nSubs
}

// newSession chooses the topics (a random subset, in random order) and the
// cursor of a subscriber's next session.
func (h *harness) newSession(k int, rng *rand.Rand, own map[string]held, old []held, prev []string, final bool) *Session {
	s := &Session{Sub: k, Cursor: broker.Cursor{}, Origin: map[string]Origin{}, ForeignFrom: map[string]string{}, CursorAt: map[string]time.Time{}}
	topics := slices.Clone(h.topics)
	rng.Shuffle(len(topics), func(i, j int) { topics[i], topics[j] = topics[j], topics[i] })
	n := 1 + rng.IntN(len(topics))
	if final {
		n = len(topics)
	}
	s.Topics = topics[:n]
	// Positions usable as foreign cursors: anything held for another topic
	// (never the empty-topic position, which names no topic at all).
	foreign := func(topic string) (string, string) {
		var cands []held
		for t, p := range own {
			if t != topic && !strings.HasPrefix(p.id, "0-") {
				cands = append(cands, p)
			}
		}
		for _, p := range old {
			if p.topic != topic && !strings.HasPrefix(p.id, "0-") {
				cands = append(cands, p)
			}
		}
		if len(cands) == 0 {
			return "", ""
		}
		sort.Slice(cands, func(i, j int) bool { return cands[i].topic+cands[i].id < cands[j].topic+cands[j].id })
		c := cands[rng.IntN(len(cands))]
		return c.topic, c.id
	}
	stale := func(topic string) (held, bool) {
		var cands []held
		for _, p := range old {
			if p.topic == topic {
				cands = append(cands, p)
			}
		}
		if len(cands) == 0 {
			return held{}, false
		}
		return cands[rng.IntN(len(cands))], true
	}
	var shape []string
	for _, topic := range s.Topics {
		r := rng.Float64()
		mine, ok := own[topic]
		if !ok {
			r = 0.55 + 0.45*r // none, stale, foreign or garbage
		}
		switch {
		case r < 0.55:
			s.Cursor[topic], s.Origin[topic], s.CursorAt[topic] = mine.id, FromOwn, mine.at
		case r < 0.68:
			s.Origin[topic] = FromNone
		case r < 0.82:
			if p, ok := stale(topic); ok {
				s.Cursor[topic], s.Origin[topic], s.CursorAt[topic] = p.id, FromStale, p.at
			} else if mine.id != "" {
				s.Cursor[topic], s.Origin[topic], s.CursorAt[topic] = mine.id, FromOwn, mine.at
			}
		case r < 0.95:
			if from, id := foreign(topic); id != "" {
				s.Cursor[topic], s.Origin[topic], s.ForeignFrom[topic] = id, FromForeign, from
			}
		default:
			s.Cursor[topic], s.Origin[topic] = "not-a-position", FromGarbage
		}
	}
	if len(s.Cursor) == 0 {
		shape = append(shape, "fresh")
	} else if len(s.Cursor) < len(s.Topics) {
		shape = append(shape, "subset")
	}
	if rng.IntN(4) == 0 {
		for _, t := range h.topics {
			if p, ok := own[t]; ok && !slices.Contains(s.Topics, t) {
				s.Cursor[t] = p.id
				shape = append(shape, "superset")
				break
			}
		}
	}
	if len(prev) == len(s.Topics) && !slices.Equal(prev, s.Topics) && sameSet(prev, s.Topics) {
		shape = append(shape, "reordered")
	}
	if len(shape) == 0 {
		shape = append(shape, "same")
	}
	s.Shape = strings.Join(shape, "+")
	return s
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
