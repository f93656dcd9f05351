// Command herald-bench is a load tool for SSE servers: it holds N
// subscribers over one or more replicas, publishes events to T topics over
// HTTP or Redis, and measures what arrives. Use it to size a herald
// deployment, or to compare herald with another server that has the same
// shape of API (GET /events?topic=, POST /publish form topic, data).
//
//	herald-bench -url http://127.0.0.1:8080 -subs 1000 -topics 1 -events 1000 -rate 200
//
// It reports deliveries per second, publish-to-receive latency (the send
// time travels in the payload), connect-time percentiles and the time to
// connect them all (first dial to last response head), completeness per
// subscriber and followed topic (lost, duplicated, reordered events, from
// per-topic sequence numbers in the payload), errors, and the server's
// resident memory (from /proc/<pid>/status with -pid, or from a Prometheus
// endpoint with -metrics-url) before connecting, once all are connected and at the end,
// with the bytes per connection that gives. For a sample of streams
// (-hb-sample) it times the heartbeat comments while the connections are
// idle (before publishing): the first one's delay after the response head,
// the gaps between them, and with -heartbeat (the server's interval) the
// late ones and the streams that got none. Output: a human-readable table,
// then one line of JSON (the last line) to compare runs.
//
// With -batch N each publish request carries N events: over HTTP one
// application/x-ndjson body (herald's batch publish; its per-event results
// count each event as published or failed), over Redis one pipeline of
// FCALLs. -rate counts events; the publish RTT is per request. A server
// that knows only the single-event form (refserver) fails such requests.
// With -idempotent every event carries a unique idempotency key,
// <run id hex>-<topic index>-<seq>: the Idempotency-Key header of a
// single-event request, the idempotency_key field of a batch line, the 4th
// FCALL argument; it measures what herald's key record costs.
//
// With -sub-topics K each subscriber follows K topics on one stream
// (?topic=a&topic=b, which herald and refserver both accept), and
// completeness is counted per subscriber and topic: e.g. 8 concurrent
// publishers to 1 subscriber is -subs 1 -topics 8 -sub-topics 8
// -publishers 8.
//
// Every phase is bounded: connects by -connect-timeout, publishing by
// -events and/or -duration, the wait for stragglers by -drain-timeout, and
// the whole run by -timeout.
//
// With -compare file.jsonl it instead reads summary lines written by earlier
// runs (labelled with -scenario and -target) and prints a ratio table.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strings"
	"time"
)

// config is the command line.
type config struct {
	urls        []string
	eventsPath  string
	publishPath string
	subs        int
	topics      int
	subTopics   int
	topicPrefix string
	events      int
	rate        float64
	publishers  int
	batch       int
	idempotent  bool
	duration    time.Duration
	payload     int
	eventType   string
	publishVia  string
	publishURL  string
	redisURL    string
	redisClust  bool
	redisPrefix string

	connectConcurrency int
	connectTimeout     time.Duration
	sourceIPs          int
	header             []string

	hold         time.Duration
	hbSample     int
	heartbeat    time.Duration
	settle       time.Duration
	drainTimeout time.Duration
	timeout      time.Duration

	pid        int
	metricsURL string

	scenario   string
	target     string
	quiet      bool
	compare    string
	baseline   string
	cpuprofile string
}

type listFlag struct{ dst *[]string }

func (l listFlag) String() string {
	if l.dst == nil {
		return ""
	}
	return strings.Join(*l.dst, ",")
}

func (l listFlag) Set(v string) error {
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l.dst = append(*l.dst, p)
		}
	}
	return nil
}

type headerFlag struct{ dst *[]string }

func (h headerFlag) String() string { return "" }
func (h headerFlag) Set(v string) error {
	if !strings.Contains(v, ":") || strings.ContainsAny(v, "\r\n") {
		return fmt.Errorf("header %q: want 'Name: value'", v)
	}
	*h.dst = append(*h.dst, v)
	return nil
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("herald-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Var(listFlag{&c.urls}, "url", "base URL of a replica (repeat or comma-separate for several; subscribers are spread round-robin)")
	fs.StringVar(&c.eventsPath, "events-path", "/events", "stream path; ?topic=<name> is added (once per followed topic)")
	fs.StringVar(&c.publishPath, "publish-path", "/publish", "publish path (HTTP publishing)")
	fs.IntVar(&c.subs, "subs", 1, "subscribers (one connection each)")
	fs.IntVar(&c.topics, "topics", 1, "topics; subscriber i follows topic i mod topics (and the next ones with -sub-topics)")
	fs.IntVar(&c.subTopics, "sub-topics", 1, "topics each subscriber follows, 1..-topics: subscriber i follows i, i+1, ..., i+K-1 (mod -topics) on one stream (?topic=a&topic=b)")
	fs.StringVar(&c.topicPrefix, "topic-prefix", "", "topic name prefix (default: bench-<run id>-, unique per run)")
	fs.IntVar(&c.events, "events", 0, "events to publish in total, spread round-robin over the topics (0: until -duration)")
	fs.Float64Var(&c.rate, "rate", 0, "publish rate in events/s over all publishers (0: as fast as the publishers go)")
	fs.IntVar(&c.publishers, "publishers", 1, "concurrent publishers; each owns topics p, p+P, ... so per-topic order holds (capped at -topics)")
	fs.IntVar(&c.batch, "batch", 1, "events per publish request: with -publish http one application/x-ndjson body (1: a single-event form), with redis one pipeline of FCALLs")
	fs.BoolVar(&c.idempotent, "idempotent", false, "give every event a unique idempotency key <run id hex>-<topic index>-<seq> (HTTP: Idempotency-Key header, or idempotency_key in a batch; Redis: 4th FCALL argument)")
	fs.DurationVar(&c.duration, "duration", 0, "bound on the publishing phase (0: until -events)")
	fs.IntVar(&c.payload, "payload", 64, "event data size in bytes (at least the ~40-byte header holding sequence and send time)")
	fs.StringVar(&c.eventType, "event-type", "", "event type of published events (empty: the default message type)")
	fs.StringVar(&c.publishVia, "publish", "http", "publish over http (POST form topic, data, event) or redis (FCALL <prefix>_publish)")
	fs.StringVar(&c.publishURL, "publish-url", "", "publish URL (default: first -url + -publish-path)")
	fs.StringVar(&c.redisURL, "redis-url", "redis://127.0.0.1:6379/0", "Redis URL for -publish redis")
	fs.BoolVar(&c.redisClust, "redis-cluster", false, "-redis-url names Redis Cluster nodes (redis://node1:6379?addr=node2:6379...)")
	fs.StringVar(&c.redisPrefix, "redis-prefix", "herald", "herald's --redis-prefix: the function called is <prefix>_publish")
	fs.IntVar(&c.connectConcurrency, "connect-concurrency", 256, "connections being opened at once")
	fs.DurationVar(&c.connectTimeout, "connect-timeout", 30*time.Second, "bound on opening one stream (dial to response headers)")
	fs.IntVar(&c.sourceIPs, "source-ips", 1, "spread connections to a loopback URL over source addresses 127.0.0.1..127.0.0.N (beyond ~28k connections)")
	fs.Var(headerFlag{&c.header}, "header", "extra request header on streams, 'Name: value' (repeatable)")
	fs.DurationVar(&c.hold, "hold", 0, "keep the connections idle this long before publishing (idle-scale test), then count those still open")
	fs.IntVar(&c.hbSample, "hb-sample", 200, "streams (spread evenly over the subscribers) whose heartbeat comments are timed from their response head until publishing starts (0: none)")
	fs.DurationVar(&c.heartbeat, "heartbeat", 0, "the server's heartbeat interval: sampled heartbeats later than it + max(1s, 10%) are counted late (0: unknown, just report)")
	fs.DurationVar(&c.settle, "settle", time.Second, "wait after the last connect before measuring memory")
	fs.DurationVar(&c.drainTimeout, "drain-timeout", 10*time.Second, "after the last publish, wait at most this long for missing deliveries")
	fs.DurationVar(&c.timeout, "timeout", 5*time.Minute, "bound on the whole run")
	fs.IntVar(&c.pid, "pid", 0, "server PID on this machine: memory from /proc/<pid>/status")
	fs.StringVar(&c.metricsURL, "metrics-url", "", "Prometheus endpoint with process_resident_memory_bytes (default with no -pid: first -url + /metrics, if it answers)")
	fs.StringVar(&c.scenario, "scenario", "", "scenario label written to the summary")
	fs.StringVar(&c.target, "target", "", "target label written to the summary (e.g. herald-mem)")
	fs.BoolVar(&c.quiet, "quiet", false, "print only the JSON summary")
	fs.StringVar(&c.cpuprofile, "cpuprofile", "", "write the load tool's own CPU profile to this file (to check that it is not the bottleneck)")
	fs.StringVar(&c.compare, "compare", "", "instead of a run: read JSON summaries (one per line) from this file and print a ratio table")
	fs.StringVar(&c.baseline, "baseline", "refserver", "with -compare: the target the ratios divide by")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if c.compare != "" {
		return c, nil
	}
	switch {
	case len(c.urls) == 0:
		return c, errors.New("-url is required")
	case c.subs < 0 || c.topics < 1 || c.events < 0 || c.rate < 0 || c.publishers < 1 || c.payload < 0 || c.hbSample < 0 || c.heartbeat < 0:
		return c, errors.New("-subs, -events, -rate, -payload, -hb-sample, -heartbeat must be >= 0; -topics, -publishers >= 1")
	case c.connectConcurrency < 1 || c.sourceIPs < 1 || c.sourceIPs > 254:
		return c, errors.New("-connect-concurrency >= 1, -source-ips in 1..254")
	case c.subTopics < 1 || c.subTopics > c.topics:
		return c, fmt.Errorf("-sub-topics %d: want 1..-topics (%d)", c.subTopics, c.topics)
	case c.batch < 1:
		return c, fmt.Errorf("-batch %d: want >= 1 (events per publish request)", c.batch)
	case c.publishVia != "http" && c.publishVia != "redis":
		return c, fmt.Errorf("-publish %q: want http or redis", c.publishVia)
	case c.timeout <= 0 || c.connectTimeout <= 0:
		return c, errors.New("-timeout and -connect-timeout must be > 0")
	}
	return c, nil
}

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

func realMain(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "herald-bench: %v\n", err)
		return 2
	}
	if cfg.compare != "" {
		if err := compareFile(cfg.compare, cfg.baseline, stdout); err != nil {
			fmt.Fprintf(stderr, "herald-bench: %v\n", err)
			return 1
		}
		return 0
	}
	if cfg.cpuprofile != "" {
		f, err := os.Create(cfg.cpuprofile)
		if err != nil {
			fmt.Fprintf(stderr, "herald-bench: %v\n", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "herald-bench: %v\n", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.timeout)
	defer cancel()
	res, err := run(ctx, cfg, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "herald-bench: %v\n", err)
		return 1
	}
	if !cfg.quiet {
		res.printTable(stdout)
	}
	line, _ := json.Marshal(res)
	fmt.Fprintf(stdout, "%s\n", line)
	if res.Connected == 0 && cfg.subs > 0 {
		return 1
	}
	return 0
}
