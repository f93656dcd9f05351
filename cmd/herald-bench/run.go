package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// result is the run's summary; its JSON form is the tool's last output line.
type result struct {
	Scenario   string   `json:"scenario,omitempty"`
	Target     string   `json:"target,omitempty"`
	URLs       []string `json:"urls"`
	Publish    string   `json:"publish"`
	Subs       int      `json:"subs"`
	Topics     int      `json:"topics"`
	SubTopics  int      `json:"sub_topics"` // topics each subscriber follows
	Payload    int      `json:"payload"`
	Batch      int      `json:"batch"`
	Idempotent bool     `json:"idempotent"`
	RateWanted float64  `json:"rate"`
	NoFile     uint64   `json:"nofile"`

	Connected     int         `json:"connected"`
	ConnectErrors int         `json:"connect_errors"`
	Connect       percentiles `json:"connect"`
	ConnectAll    float64     `json:"connect_all_ms"` // wall time from the first dial to the last connected stream's response head
	Held          int         `json:"held"`           // open after connecting (and -hold), before publishing
	StreamErrors  int         `json:"stream_errors"`  // streams the server or network ended during the run
	OpenAtEnd     int         `json:"open_at_end"`

	Published     uint64      `json:"published"`
	PublishErrors uint64      `json:"publish_errors"`
	PublishPerSec float64     `json:"publish_per_s"`
	PublishRTT    percentiles `json:"publish_rtt"`

	Expected       uint64      `json:"expected"`
	Delivered      uint64      `json:"delivered"`
	DeliveriesPerS float64     `json:"deliveries_per_s"`
	Latency        percentiles `json:"latency"`
	Lost           uint64      `json:"lost"`
	Duplicated     uint64      `json:"duplicated"`
	Reordered      uint64      `json:"reordered"`
	Foreign        uint64      `json:"foreign"`
	OtherEvents    uint64      `json:"other_events"`
	CompleteSubs   int         `json:"complete_subs"`
	IncompleteSubs int         `json:"incomplete_subs"`

	// Heartbeats of the -hb-sample streams while idle (nil: no sample).
	Heartbeats *hbResult `json:"heartbeats,omitempty"`

	// CPU used from the first publish to the end of the wait for
	// deliveries, in cores (1.0 = one core busy all along): a figure near
	// the cores the load tool may use means the tool, not the server,
	// limited the run. ServerCPU needs -pid.
	// OtherCPU is what the rest of the machine used meanwhile (other
	// processes, e.g. redis-server or other people's jobs on a shared
	// machine): a large figure means the run was disturbed.
	ToolCPU   float64 `json:"tool_cpu"`
	ServerCPU float64 `json:"server_cpu,omitempty"`
	OtherCPU  float64 `json:"other_cpu"`

	MemSource    string `json:"mem_source,omitempty"`
	RSSBefore    int64  `json:"rss_before"`
	RSSConnected int64  `json:"rss_connected"`
	RSSEnd       int64  `json:"rss_end"`
	BytesPerConn int64  `json:"bytes_per_conn"`

	// Whole-run CPU seconds (utime+stime from /proc/<pid>/stat, before
	// and after the tool ran) of the server process and of the Redis
	// processes behind it: not measured by the tool, scripts/bench.sh
	// adds them to the summary line; -compare divides them by events
	// published and by deliveries.
	ProcServerCPU float64 `json:"proc_server_cpu_s,omitempty"`
	ProcRedisCPU  float64 `json:"proc_redis_cpu_s,omitempty"`

	Errors   []string `json:"errors,omitempty"`
	Seconds  float64  `json:"seconds"`
	TimedOut bool     `json:"timed_out,omitempty"`
}

// runner holds the state shared by subscribers and publishers.
type runner struct {
	cfg   config
	runID uint32
	t0    time.Time

	lat        shardedHist
	delivered  [16]paddedCounter
	errMu      sync.Mutex
	errCounts  map[string]int
	stopping   atomic.Bool
	publishRTT shardedHist
}

type paddedCounter struct {
	n atomic.Uint64
	_ [56]byte
}

func (r *runner) deliveredTotal() uint64 {
	var n uint64
	for i := range r.delivered {
		n += r.delivered[i].n.Load()
	}
	return n
}

// noteErr counts an error by its message (addresses and ports removed so
// that similar errors group).
func (r *runner) noteErr(kind string, err error) {
	msg := kind + ": " + scrubErr(err.Error())
	r.errMu.Lock()
	r.errCounts[msg]++
	r.errMu.Unlock()
}

func scrubErr(s string) string {
	// "dial tcp 127.0.0.1:5555->127.0.0.1:8080: ..." -> "dial tcp: ..."
	f := strings.Fields(s)
	out := f[:0]
	for _, w := range f {
		if strings.Count(w, ".") >= 3 && strings.Contains(w, ":") {
			continue
		}
		out = append(out, w)
	}
	return strings.Join(out, " ")
}

// event is the payloadSink: one dispatched event on subscriber s.
func (r *runner) event(s *subscriber, data []byte) {
	now := time.Since(r.t0)
	p, ok := parsePayload(data)
	if !ok {
		s.other++
		return
	}
	var ts *topicState
	if p.run == r.runID {
		ts = s.topicState(p.topic, r.cfg.topics)
	}
	if ts == nil {
		s.foreign++
		return
	}
	s.received++
	if ts.seen.set(p.seq) {
		ts.dup++
		return
	}
	ts.unique++
	if p.seq < ts.maxSeq {
		ts.reorder++
	} else {
		ts.maxSeq = p.seq
	}
	s.last = now
	r.lat.record(s.idx, now-time.Duration(p.sent))
	r.delivered[s.idx&15].n.Add(1)
}

func topicName(prefix string, i int) string { return prefix + strconv.Itoa(i) }

// run performs one benchmark run. progress receives a few status lines.
func run(ctx context.Context, cfg config, progress io.Writer) (*result, error) {
	started := time.Now()
	r := &runner{cfg: cfg, runID: rand.Uint32(), t0: started, errCounts: map[string]int{}}
	prefix := cfg.topicPrefix
	if prefix == "" {
		prefix = fmt.Sprintf("bench-%08x-", r.runID)
	}
	res := &result{Scenario: cfg.scenario, Target: cfg.target, URLs: cfg.urls, Publish: cfg.publishVia,
		Subs: cfg.subs, Topics: cfg.topics, SubTopics: cfg.subTopics, Payload: cfg.payload, Batch: cfg.batch, Idempotent: cfg.idempotent, RateWanted: cfg.rate}
	nofile, err := raiseNofile()
	if err != nil {
		fmt.Fprintf(progress, "herald-bench: cannot raise the file limit: %v\n", err)
	}
	res.NoFile = nofile
	if cfg.subs+64 > int(nofile) && nofile > 0 {
		fmt.Fprintf(progress, "herald-bench: warning: %d subscribers but only %d file descriptors\n", cfg.subs, nofile)
	}

	// Validate URLs and build publishers before connecting anything.
	streamURLs := make([]*url.URL, 0, len(cfg.urls)*cfg.topics)
	for _, base := range cfg.urls {
		for t := range cfg.topics {
			names := make([]string, max(cfg.subTopics, 1))
			for k := range names {
				names[k] = topicName(prefix, (t+k)%cfg.topics)
			}
			u, err := streamURL(base, cfg.eventsPath, names...)
			if err != nil {
				return nil, err
			}
			streamURLs = append(streamURLs, u)
		}
	}
	nPub := min(cfg.publishers, cfg.topics)
	pubs := make([]publisher, nPub)
	for i := range pubs {
		switch cfg.publishVia {
		case "http":
			u := cfg.publishURL
			if u == "" {
				u = strings.TrimRight(cfg.urls[0], "/") + cfg.publishPath
			}
			pubs[i] = newHTTPPublisher(u, 30*time.Second)
		case "redis":
			p, err := newRedisPublisher(cfg.redisURL, cfg.redisPrefix, cfg.redisClust)
			if err != nil {
				return nil, err
			}
			pubs[i] = p
		}
	}
	defer func() {
		for _, p := range pubs {
			p.close()
		}
	}()

	var mem memSource
	switch {
	case cfg.pid > 0:
		mem = procRSS{pid: cfg.pid}
	case cfg.metricsURL != "":
		mem = newMetricsRSS(cfg.metricsURL)
	default:
		m := newMetricsRSS(strings.TrimRight(cfg.urls[0], "/") + "/metrics")
		if _, err := m.rss(ctx); err == nil {
			mem = m
		}
	}
	readMem := func() int64 {
		if mem == nil {
			return 0
		}
		v, err := mem.rss(ctx)
		if err != nil {
			r.noteErr("memory", err)
			return 0
		}
		return v
	}
	if mem != nil {
		res.MemSource = mem.String()
	}
	res.RSSBefore = readMem()

	// Connect.
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	d := &dialer{timeout: cfg.connectTimeout, sourceIPs: cfg.sourceIPs}
	var extra string
	for _, h := range cfg.header {
		extra += h + "\r\n"
	}
	subs := make([]*subscriber, cfg.subs)
	var opened, ended sync.WaitGroup
	sem := make(chan struct{}, cfg.connectConcurrency)
	// The heartbeat sample: subscribers j*subs/k for j < k.
	var hb *hbSampler
	var hbStreams []*hbStream
	nSample := min(cfg.hbSample, cfg.subs)
	if nSample > 0 {
		hb = newHBSampler(r.t0, cfg.heartbeat)
		hbStreams = make([]*hbStream, 0, nSample)
	}
	connStart := time.Now()
	for i := range subs {
		t := i % cfg.topics
		u := streamURLs[(i%len(cfg.urls))*cfg.topics+t]
		s := &subscriber{idx: i, first: t, topics: make([]topicState, max(cfg.subTopics, 1)), url: u.String()}
		subs[i] = s
		if j := len(hbStreams); j < nSample && i == j*cfg.subs/nSample {
			s.hb = &hbStream{sampler: hb, idx: i}
			hbStreams = append(hbStreams, s.hb)
		}
		select {
		case sem <- struct{}{}:
		case <-runCtx.Done():
		}
		if runCtx.Err() != nil {
			s.connErr = runCtx.Err()
			continue
		}
		opened.Add(1)
		ended.Add(1)
		go func() {
			defer ended.Done()
			br, err := s.open(runCtx, d, u, extra)
			<-sem
			if err != nil {
				s.connErr = err
				if s.conn != nil {
					s.unhook()
					_ = s.conn.Close()
				}
				opened.Done()
				return
			}
			s.opened = time.Since(r.t0)
			if s.hb != nil {
				s.hb.opened = s.opened
			}
			s.connected = true
			s.alive.Store(true)
			opened.Done()
			err = readEvents(br, s, r)
			if s.hb != nil {
				s.hb.streamEnded()
			}
			s.alive.Store(false)
			s.unhook()
			_ = s.conn.Close()
			if !r.stopping.Load() {
				s.streamErr = err
			}
		}()
	}
	opened.Wait()
	connHist := &shardedHist{}
	var lastOpened time.Duration
	for _, s := range subs {
		if s.connected {
			res.Connected++
			connHist.record(s.idx, s.connectTime)
			lastOpened = max(lastOpened, s.opened)
		} else if s.connErr != nil {
			res.ConnectErrors++
			r.noteErr("connect", s.connErr)
		}
	}
	res.Connect = connHist.summary().percentiles()
	connectAll := max(0, lastOpened-connStart.Sub(r.t0))
	res.ConnectAll = round3(float64(connectAll) / 1e6)
	if !cfg.quiet {
		fmt.Fprintf(progress, "herald-bench: %d/%d connected in %v\n", res.Connected, cfg.subs, connectAll.Round(time.Millisecond))
	}
	sleepCtx(runCtx, cfg.settle)
	res.RSSConnected = readMem()
	if res.Connected > 0 && res.RSSBefore > 0 && res.RSSConnected > 0 {
		res.BytesPerConn = (res.RSSConnected - res.RSSBefore) / int64(res.Connected)
	}
	if cfg.hold > 0 {
		if !cfg.quiet {
			fmt.Fprintf(progress, "herald-bench: holding %d connections for %v\n", res.Connected, cfg.hold)
		}
		sleepCtx(runCtx, cfg.hold)
	}
	if hb != nil {
		hb.close() // the idle phase ends
	}
	for _, s := range subs {
		if s.alive.Load() {
			res.Held++
		}
	}

	// Publish.
	var pubWG sync.WaitGroup
	okPerTopic := make([]uint64, cfg.topics)
	var published, pubErrors atomic.Uint64
	pubStart := time.Now()
	toolCPU0 := toolCPU()
	machineCPU0, _ := machineCPU()
	var serverCPU0 time.Duration
	serverCPUOK := false
	if cfg.pid > 0 {
		var err error
		serverCPU0, err = procCPU(cfg.pid)
		serverCPUOK = err == nil
	}
	var pubDeadline time.Time
	if cfg.duration > 0 {
		pubDeadline = pubStart.Add(cfg.duration)
	}
	if cfg.events > 0 || cfg.duration > 0 {
		for p := range nPub {
			pubWG.Add(1)
			go func() {
				defer pubWG.Done()
				quota := cfg.events / nPub
				if p < cfg.events%nPub {
					quota++
				}
				r.publishLoop(runCtx, pubs[p], p, nPub, prefix, okPerTopic, quota, pubDeadline, &published, &pubErrors)
			}()
		}
	}
	pubWG.Wait()
	pubEnd := time.Now()
	res.Published = published.Load()
	res.PublishErrors = pubErrors.Load()
	if el := pubEnd.Sub(pubStart).Seconds(); el > 0 && res.Published > 0 {
		res.PublishPerSec = round3(float64(res.Published) / el)
	}
	res.PublishRTT = r.publishRTT.summary().percentiles()

	// Wait for the deliveries the open subscribers are owed.
	var expected uint64
	for _, s := range subs {
		if s.connected {
			for k := range s.topics {
				expected += okPerTopic[(s.first+k)%cfg.topics]
			}
		}
	}
	res.Expected = expected
	if res.Published > 0 {
		deadline := time.Now().Add(cfg.drainTimeout)
		for r.deliveredTotal() < expected && time.Now().Before(deadline) && runCtx.Err() == nil {
			anyAlive := false
			for _, s := range subs {
				if s.alive.Load() {
					anyAlive = true
					break
				}
			}
			if !anyAlive {
				break
			}
			sleepCtx(runCtx, 10*time.Millisecond)
		}
	}
	res.TimedOut = ctx.Err() != nil
	if el := time.Since(pubStart); res.Published > 0 && el > 0 {
		res.ToolCPU = round3(float64(toolCPU()-toolCPU0) / float64(el))
		if cfg.pid > 0 {
			if c, err := procCPU(cfg.pid); err == nil && serverCPUOK {
				res.ServerCPU = round3(float64(c-serverCPU0) / float64(el))
			}
		}
		if m, err := machineCPU(); err == nil && machineCPU0 > 0 {
			res.OtherCPU = round3(max(0, float64(m-machineCPU0)/float64(el)-res.ToolCPU-res.ServerCPU))
		}
	}
	for _, s := range subs {
		if s.alive.Load() {
			res.OpenAtEnd++
		}
	}
	res.RSSEnd = readMem()

	// Stop every stream and collect per-subscriber results.
	r.stopping.Store(true)
	stop()
	ended.Wait()
	var lastRecv time.Duration
	for _, s := range subs {
		if !s.connected {
			continue
		}
		if s.streamErr != nil {
			res.StreamErrors++
			r.noteErr("stream", s.streamErr)
		}
		complete := true
		for k, ts := range s.topics {
			want := okPerTopic[(s.first+k)%cfg.topics]
			if ts.unique < want {
				res.Lost += want - ts.unique
			}
			res.Duplicated += ts.dup
			res.Reordered += ts.reorder
			complete = complete && ts.unique >= want && ts.dup == 0 && ts.reorder == 0
		}
		res.Foreign += s.foreign
		res.OtherEvents += s.other
		if complete {
			res.CompleteSubs++
		} else {
			res.IncompleteSubs++
		}
		if s.last > lastRecv {
			lastRecv = s.last
		}
	}
	if hb != nil {
		connected := hbStreams[:0]
		for _, h := range hbStreams {
			if subs[h.idx].connected {
				connected = append(connected, h)
			}
		}
		res.Heartbeats = hb.summarize(connected)
	}
	res.Delivered = r.deliveredTotal()
	if span := lastRecv - pubStart.Sub(r.t0); res.Delivered > 0 && span > 0 {
		res.DeliveriesPerS = round3(float64(res.Delivered) / span.Seconds())
	}
	res.Latency = r.lat.summary().percentiles()
	res.Errors = r.errorList()
	res.Seconds = round3(time.Since(started).Seconds())
	return res, nil
}

// publishLoop is publisher p of nPub: it owns topics p, p+nPub, ... and
// publishes to them round-robin, -batch events per request, paced by -rate
// (in events), until it has sent quota events (0: no limit), the deadline
// passes or ctx ends.
func (r *runner) publishLoop(ctx context.Context, pub publisher, p, nPub int, prefix string, okPerTopic []uint64,
	quota int, deadline time.Time, published, pubErrors *atomic.Uint64) {
	var mine []int
	var names []string
	for t := p; t < r.cfg.topics; t += nPub {
		mine = append(mine, t)
		names = append(names, topicName(prefix, t))
	}
	seq := make([]uint64, len(mine))
	var interval time.Duration
	if r.cfg.rate > 0 {
		interval = time.Duration(float64(time.Second) * float64(nPub) / r.cfg.rate)
	}
	batch := max(r.cfg.batch, 1)
	bufs := make([][]byte, batch)
	for i := range bufs {
		bufs[i] = make([]byte, 0, r.cfg.payload+64)
	}
	evs := make([]pubEvent, batch)
	topicOf := make([]int, batch)
	errs := make([]error, batch)
	start := time.Now()
	for k := 0; ; { // k: events sent so far
		if ctx.Err() != nil || (!deadline.IsZero() && !time.Now().Before(deadline)) {
			return
		}
		n := batch
		if r.cfg.events > 0 {
			if k >= quota {
				return
			}
			n = min(n, quota-k)
		}
		if interval > 0 {
			if wait := time.Until(start.Add(time.Duration(k) * interval)); wait > 0 {
				sleepCtx(ctx, wait)
				if ctx.Err() != nil {
					return
				}
			}
		}
		sent := time.Since(r.t0)
		for j := range n {
			i := (k + j) % len(mine)
			seq[i]++
			bufs[j] = appendPayload(bufs[j][:0], r.runID, mine[i], seq[i], int64(sent), r.cfg.payload)
			evs[j] = pubEvent{topic: names[i], data: bufs[j]}
			if r.cfg.idempotent {
				evs[j].key = idempotencyKey(r.runID, mine[i], seq[i])
			}
			topicOf[j] = mine[i]
		}
		k += n
		pub.publish(ctx, r.cfg.eventType, evs[:n], errs[:n])
		r.publishRTT.record(p, time.Since(r.t0)-sent)
		for j, err := range errs[:n] {
			if err != nil {
				pubErrors.Add(1)
				if ctx.Err() == nil {
					r.noteErr("publish", err)
				}
				continue
			}
			okPerTopic[topicOf[j]]++
			published.Add(1)
		}
	}
}

// idempotencyKey is the key of a topic's event seq in this run:
// <run id hex>-<topic index>-<seq>.
func idempotencyKey(run uint32, topic int, seq uint64) string {
	var b [40]byte
	k := strconv.AppendUint(b[:0], uint64(run), 16)
	k = append(k, '-')
	k = strconv.AppendInt(k, int64(topic), 10)
	k = append(k, '-')
	k = strconv.AppendUint(k, seq, 10)
	return string(k)
}

func (r *runner) errorList() []string {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	out := make([]string, 0, len(r.errCounts))
	for msg, n := range r.errCounts {
		out = append(out, fmt.Sprintf("%dx %s", n, msg))
	}
	sort.Strings(out)
	if len(out) > 10 {
		out = append(out[:10], fmt.Sprintf("... %d more kinds", len(out)-10))
	}
	return out
}

func sleepCtx(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

func (res *result) printTable(w io.Writer) {
	mb := func(b int64) string {
		if b == 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	}
	dist := func(p percentiles) string {
		return fmt.Sprintf("p50 %.3f  p90 %.3f  p99 %.3f  max %.3f ms  (n=%d)", p.P50, p.P90, p.P99, p.Max, p.N)
	}
	label := strings.TrimSpace(res.Scenario + " " + res.Target)
	if label != "" {
		fmt.Fprintf(w, "== %s\n", label)
	}
	fmt.Fprintf(w, "%-16s %d on %s (%d topics, %d per subscriber, payload %d B, nofile %d)\n", "subscribers",
		res.Subs, strings.Join(res.URLs, ","), res.Topics, max(res.SubTopics, 1), res.Payload, res.NoFile)
	fmt.Fprintf(w, "%-16s %d ok in %.1f ms (first dial to last response head), %d failed; each %s\n", "connected", res.Connected, res.ConnectAll, res.ConnectErrors, dist(res.Connect))
	fmt.Fprintf(w, "%-16s %d before publishing, %d at the end, %d ended by server/network\n", "held", res.Held, res.OpenAtEnd, res.StreamErrors)
	fmt.Fprintf(w, "%-16s %d ok, %d failed via %s (batch %d%s), %.0f/s; rtt per request %s\n", "published",
		res.Published, res.PublishErrors, res.Publish, max(res.Batch, 1), map[bool]string{true: ", idempotency keys"}[res.Idempotent],
		res.PublishPerSec, dist(res.PublishRTT))
	fmt.Fprintf(w, "%-16s %d of %d expected, %.0f deliveries/s\n", "delivered", res.Delivered, res.Expected, res.DeliveriesPerS)
	fmt.Fprintf(w, "%-16s %s\n", "latency", dist(res.Latency))
	if res.Published > 0 {
		fmt.Fprintf(w, "%-16s load tool %.2f cores, server %.2f cores (0: unknown) while publishing and draining\n", "cpu", res.ToolCPU, res.ServerCPU)
	}
	fmt.Fprintf(w, "%-16s %d complete, %d not; lost %d, duplicated %d, reordered %d, foreign %d, other events %d\n",
		"completeness", res.CompleteSubs, res.IncompleteSubs, res.Lost, res.Duplicated, res.Reordered, res.Foreign, res.OtherEvents)
	fmt.Fprintf(w, "%-16s before %s, connected %s, end %s; %d bytes/connection (%s)\n", "server memory",
		mb(res.RSSBefore), mb(res.RSSConnected), mb(res.RSSEnd), res.BytesPerConn, res.MemSource)
	if res.Heartbeats != nil {
		label := "heartbeats"
		for _, l := range res.Heartbeats.lines() {
			fmt.Fprintf(w, "%-16s %s\n", label, l)
			label = ""
		}
	}
	for _, e := range res.Errors {
		fmt.Fprintf(w, "%-16s %s\n", "error", e)
	}
	fmt.Fprintf(w, "%-16s %.1f s%s\n", "took", res.Seconds, map[bool]string{true: " (timed out)"}[res.TimedOut])
}
