package server

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"math"
	"net"
	"os"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/herald-sse/herald/pkg/broker"
)

// The cluster view: every replica writes a record of itself (nodeRecord)
// through the broker (broker.Directory) every --node-interval, expiring
// after nodeTTLIntervals of them, so a replica that dies vanishes by
// itself. Any replica answers for the whole fleet from these records:
// GET /api/nodes, /api/topics, /api/topics/{topic} and the status stream.
//
// Cost: a write per interval of O(min(active topics, maxRecordTopics));
// a query reads O(replicas) records.

// nodeTTLIntervals is how many intervals a record outlives its write.
const nodeTTLIntervals = 5

// maxRecordTopics bounds the topics a record lists: the busiest ones.
// Beyond it the record says topics_truncated, and topic queries say their
// counts may be incomplete.
const maxRecordTopics = 1000

// Version is herald's version, set at build time with
// -ldflags "-X github.com/herald-sse/herald/internal/server.Version=v1.2.3";
// empty means the module version or VCS revision the binary was built from.
var Version string

// version is Version, or what the binary was built from: the same for
// the whole process, so it is read once.
var version = sync.OnceValue(func() string {
	if Version != "" {
		return Version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 && (v == "" || v == "(devel)") {
			v = s.Value[:12]
		}
	}
	if v == "" {
		v = "(devel)"
	}
	return v
})

// nodeRecord is a replica's record in the cluster view, as /api/nodes
// shows it. Rates and latencies are over the last interval.
type nodeRecord struct {
	ID                  string       `json:"id"`
	Version             string       `json:"version"`
	Address             string       `json:"address"`
	Started             time.Time    `json:"started"`
	Updated             time.Time    `json:"updated"`
	Broker              brokerState  `json:"broker"`
	Connections         int          `json:"connections"`
	Topics              int          `json:"topics"`
	DeliveriesPerSecond float64      `json:"deliveries_per_second"`
	PublishesPerSecond  float64      `json:"publishes_per_second"`
	LatencyP50          *float64     `json:"latency_p50_seconds,omitempty"`
	LatencyP99          *float64     `json:"latency_p99_seconds,omitempty"`
	DeliveredTotal      uint64       `json:"delivered_total"`
	PublishedTotal      uint64       `json:"published_total"`
	TopTopics           []topicCount `json:"top_topics"`
	TopicsTruncated     bool         `json:"topics_truncated"`
}

type brokerState struct {
	Kind      string     `json:"kind"`
	Up        bool       `json:"up"`
	LastEvent *time.Time `json:"last_event,omitempty"`
}

type topicCount struct {
	Topic       string `json:"topic"`
	Subscribers int    `json:"subscribers"`
}

// sample is what the rates of the next record are computed from.
type sample struct {
	at        time.Time
	delivered uint64
	published uint64
	buckets   []uint64 // cumulative counts of the latency histogram
}

// nodes runs this replica's side of the cluster view.
type nodes struct {
	s        *Server
	dir      broker.Directory // nil: the view is this replica alone
	insp     broker.Inspector // nil: no topic counts or history
	interval time.Duration

	mu      sync.Mutex // guards the fields below
	id      string
	addr    string
	started time.Time
	prev    sample
	self    nodeRecord // the last record built
	built   bool
	failing bool          // the last announce failed (logged once per outage)
	stop    chan struct{} // closed by shutdown; nil when not announcing
	done    chan struct{} // closed when run has returned
	ended   bool          // shutdown was called: never announce again
}

func newNodes(s *Server) *nodes {
	n := &nodes{s: s, interval: s.cfg.NodeInterval, started: time.Now(), id: s.cfg.NodeID}
	n.dir, _ = s.broker.(broker.Directory)
	n.insp, _ = s.broker.(broker.Inspector)
	if n.interval <= 0 {
		n.interval = time.Second
	}
	if n.id == "" {
		n.id = defaultNodeID(s.cfg.Addr)
	}
	n.addr = advertised(s.cfg.Addr)
	n.prev = n.s.metrics.sample(time.Now())
	return n
}

// defaultNodeID is "<hostname>:<port>": unique wherever two replicas
// could run, since two cannot listen on one host's port.
func defaultNodeID(addr string) string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "herald"
	}
	_, port, _ := net.SplitHostPort(addr)
	return host + ":" + port
}

// advertised returns addr with an unspecified host replaced by this
// machine's first non-loopback address.
func advertised(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		return addr
	}
	ifaddrs, err := net.InterfaceAddrs()
	if err == nil {
		for _, a := range ifaddrs {
			if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && ipn.IP.To4() != nil {
				return net.JoinHostPort(ipn.IP.String(), port)
			}
		}
	}
	return net.JoinHostPort("127.0.0.1", port)
}

// listening learns the real listen address (a port of 0 becomes the one
// chosen) and starts announcing.
func (n *nodes) listening(addr net.Addr) {
	n.mu.Lock()
	if n.s.cfg.NodeID == "" {
		n.id = defaultNodeID(addr.String())
	}
	n.addr = advertised(addr.String())
	if n.stop != nil || n.ended { // Serve again, or after shutdown
		n.mu.Unlock()
		return
	}
	n.stop, n.done = make(chan struct{}), make(chan struct{})
	stop, done := n.stop, n.done
	n.mu.Unlock()
	go n.run(stop, done)
}

func (n *nodes) run(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(n.interval)
	defer t.Stop()
	for {
		n.announce()
		select {
		case <-t.C:
		case <-stop:
			return
		}
	}
}

// announce builds the record and writes it.
func (n *nodes) announce() {
	rec := n.build(time.Now())
	if n.dir == nil {
		return
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), n.interval)
	err = n.dir.Announce(ctx, rec.ID, b, nodeTTLIntervals*n.interval)
	cancel()
	n.mu.Lock()
	was := n.failing
	n.failing = err != nil
	n.mu.Unlock()
	switch {
	case err != nil && !was && !errors.Is(err, broker.ErrClosed):
		n.s.log.Warn("cluster view: cannot write this replica's record", "err", err)
	case err == nil && was:
		n.s.log.Info("cluster view: writing this replica's record again")
	}
}

// shutdown stops announcing and removes the record at once.
func (n *nodes) shutdown(ctx context.Context) {
	n.mu.Lock()
	stop, done, id := n.stop, n.done, n.id
	n.stop, n.ended = nil, true
	n.mu.Unlock()
	if stop == nil {
		return
	}
	close(stop)
	<-done
	if n.dir != nil {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		_ = n.dir.Withdraw(ctx, id)
		cancel()
	}
}

// build makes this replica's record as of now.
func (n *nodes) build(now time.Time) nodeRecord {
	m := n.s.metrics
	cur := m.sample(now)
	top, count, truncated := n.localTopics()

	n.mu.Lock()
	defer n.mu.Unlock()
	prev := n.prev
	n.prev = cur
	rec := nodeRecord{
		ID:              n.id,
		Version:         version(),
		Address:         n.addr,
		Started:         n.started.UTC().Truncate(time.Second),
		Updated:         now.UTC(),
		Broker:          brokerState{Kind: n.s.kind, Up: m.brokerIsUp()},
		Connections:     n.s.events.Connections(),
		Topics:          count,
		DeliveredTotal:  cur.delivered,
		PublishedTotal:  cur.published,
		TopTopics:       top,
		TopicsTruncated: truncated,
	}
	if lb, ok := n.s.broker.(interface{ LastLiveEvent() time.Time }); ok {
		if t := lb.LastLiveEvent(); !t.IsZero() {
			t = t.UTC()
			rec.Broker.LastEvent = &t
		}
	}
	if dt := cur.at.Sub(prev.at).Seconds(); dt > 0 {
		rec.DeliveriesPerSecond = round3(float64(cur.delivered-prev.delivered) / dt)
		rec.PublishesPerSecond = round3(float64(cur.published-prev.published) / dt)
	}
	if len(prev.buckets) == len(cur.buckets) {
		delta := make([]uint64, len(cur.buckets))
		for i := range delta {
			delta[i] = cur.buckets[i] - prev.buckets[i]
		}
		rec.LatencyP50 = quantile(0.5, LatencyBuckets, delta)
		rec.LatencyP99 = quantile(0.99, LatencyBuckets, delta)
	}
	n.self, n.built = rec, true
	return rec
}

// record returns the last record built, building one if none was.
func (n *nodes) record() nodeRecord {
	n.mu.Lock()
	rec, ok := n.self, n.built
	n.mu.Unlock()
	if ok {
		return rec
	}
	return n.build(time.Now())
}

// localTopics returns the busiest maxRecordTopics topics with local
// subscribers (busiest first), how many there are, and whether some were
// left out.
func (n *nodes) localTopics() (top []topicCount, count int, truncated bool) {
	if n.insp == nil {
		return []topicCount{}, 0, false
	}
	top = make([]topicCount, 0, 16)
	n.insp.LocalTopics(func(topic string, subs int) bool {
		count++
		top = append(top, topicCount{topic, subs})
		if len(top) >= 2*maxRecordTopics {
			// Keep memory bounded: cut to the busiest half.
			sortTopics(top)
			top = top[:maxRecordTopics]
		}
		return true
	})
	sortTopics(top)
	if len(top) > maxRecordTopics {
		top = top[:maxRecordTopics]
	}
	return top, count, count > len(top)
}

func sortTopics(t []topicCount) {
	slices.SortFunc(t, func(a, b topicCount) int {
		if c := cmp.Compare(b.Subscribers, a.Subscribers); c != 0 {
			return c
		}
		return cmp.Compare(a.Topic, b.Topic)
	})
}

// quantile estimates the q-quantile of observations counted per bucket
// (cumulative counts, bounds[i] the upper bound of counts[i]; one more
// count than bounds is the +Inf bucket), interpolating linearly inside
// the bucket as Prometheus's histogram_quantile does. nil when empty.
func quantile(q float64, bounds []float64, counts []uint64) *float64 {
	if len(counts) == 0 || counts[len(counts)-1] == 0 {
		return nil
	}
	total := float64(counts[len(counts)-1])
	rank := q * total
	for i, c := range counts {
		if float64(c) < rank {
			continue
		}
		if i >= len(bounds) { // the +Inf bucket: the highest finite bound
			v := bounds[len(bounds)-1]
			return &v
		}
		lo, below := 0.0, 0.0
		if i > 0 {
			lo, below = bounds[i-1], float64(counts[i-1])
		}
		v := bounds[i]
		if in := float64(c) - below; in > 0 {
			v = lo + (bounds[i]-lo)*(rank-below)/in
		}
		v = math.Round(v*1e6) / 1e6
		return &v
	}
	return nil
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

// view is the fleet as the records tell it.
type view struct {
	nodes    []json.RawMessage // as written, sorted by id
	records  []nodeRecord
	complete bool   // every live replica's record was read
	err      string // why not
}

// fleet reads every live record. When the broker cannot be read, the view
// is this replica alone, marked incomplete. Records are kept as written,
// decoded once; only this replica's own is encoded here.
func (n *nodes) fleet(ctx context.Context) view {
	self := n.record()
	selfRaw, _ := json.Marshal(self)
	if n.dir == nil {
		return view{nodes: []json.RawMessage{selfRaw}, records: []nodeRecord{self}, complete: true}
	}
	raw, err := n.dir.Nodes(ctx)
	if err != nil {
		return view{nodes: []json.RawMessage{selfRaw}, records: []nodeRecord{self}, err: "the broker cannot be read: " + err.Error()}
	}
	type entry struct {
		raw json.RawMessage
		rec nodeRecord
	}
	entries := make([]entry, 0, len(raw)+1)
	entries = append(entries, entry{selfRaw, self}) // this replica's freshest
	for _, b := range raw {
		var r nodeRecord
		if json.Unmarshal(b, &r) != nil || r.ID == "" || r.ID == self.ID {
			continue // not a herald record, or this replica's older one
		}
		entries = append(entries, entry{b, r})
	}
	slices.SortFunc(entries, func(a, b entry) int { return cmp.Compare(a.rec.ID, b.rec.ID) })
	v := view{complete: true, nodes: make([]json.RawMessage, len(entries)), records: make([]nodeRecord, len(entries))}
	for i, e := range entries {
		v.nodes[i], v.records[i] = e.raw, e.rec
	}
	return v
}

// topicSummary is one topic across the fleet.
type topicSummary struct {
	Topic       string `json:"topic"`
	Subscribers int    `json:"subscribers"`
	Nodes       int    `json:"nodes"`
}

// busiest returns the topics starting with prefix, busiest first, at most
// limit, and whether the counts are complete.
func (v view) busiest(prefix string, limit int) ([]topicSummary, bool) {
	by := map[string]*topicSummary{}
	complete := v.complete
	for _, r := range v.records {
		if r.TopicsTruncated {
			complete = false
		}
		for _, t := range r.TopTopics {
			if len(t.Topic) < len(prefix) || t.Topic[:len(prefix)] != prefix {
				continue
			}
			s := by[t.Topic]
			if s == nil {
				s = &topicSummary{Topic: t.Topic}
				by[t.Topic] = s
			}
			s.Subscribers += t.Subscribers
			s.Nodes++
		}
	}
	out := make([]topicSummary, 0, len(by))
	for _, s := range by {
		out = append(out, *s)
	}
	slices.SortFunc(out, func(a, b topicSummary) int {
		if c := cmp.Compare(b.Subscribers, a.Subscribers); c != 0 {
			return c
		}
		return cmp.Compare(a.Topic, b.Topic)
	})
	if len(out) > limit {
		out = out[:limit]
	}
	return out, complete
}

type nodeSubscribers struct {
	ID          string `json:"id"`
	Subscribers int    `json:"subscribers"`
}

// subscribers returns topic's subscribers per replica (replicas without
// any left out) and whether every replica's count is known.
func (v view) subscribers(topic string) ([]nodeSubscribers, int, bool) {
	out := []nodeSubscribers{}
	total, complete := 0, v.complete
	for _, r := range v.records {
		found := false
		for _, t := range r.TopTopics {
			if t.Topic == topic {
				out = append(out, nodeSubscribers{r.ID, t.Subscribers})
				total += t.Subscribers
				found = true
				break
			}
		}
		if !found && r.TopicsTruncated {
			complete = false
		}
	}
	return out, total, complete
}

// parseLimit reads ?limit= (default def, at most max).
func parseLimit(s string, def, max int) (int, error) {
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0, errors.New("limit must be a positive whole number")
	}
	return min(n, max), nil
}
