package server

import (
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"

	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/broker/redisbroker"
	"github.com/herald-sse/herald/pkg/sse"
)

// Metrics holds herald's Prometheus metrics on a registry of its own (plus
// the process and Go runtime collectors). Its methods are the stream
// handler's metrics hooks (see streamMetrics). Safe for concurrent use.
type Metrics struct {
	Registry *prometheus.Registry

	connections     prometheus.Gauge
	streams         prometheus.Counter
	streamsClosed   *prometheus.CounterVec
	published       prometheus.Counter
	publishErrors   *prometheus.CounterVec
	delivered       prometheus.Counter
	replayed        *prometheus.CounterVec
	resets          *prometheus.CounterVec
	slowDisconnects prometheus.Counter
	latency         prometheus.Histogram
	brokerUp        prometheus.Gauge
	reconnects      *prometheus.CounterVec
	// maxConnections is --max-connections, so that saturation can be
	// alerted on (herald_connections / herald_max_connections).
	maxConnections prometheus.Gauge
	up             atomic.Bool // what brokerUp says
}

// LatencyBuckets are the upper bounds of herald_delivery_latency_seconds:
// 0.5ms to 10s, roughly doubling.
var LatencyBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// NewMetrics creates the metrics and registers them on a new registry.
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_connections", Help: "Open event streams.",
		}),
		streams: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_streams_total", Help: "Event streams opened.",
		}),
		streamsClosed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_streams_closed_total", Help: "Event streams closed, by reason (client, slow, drain, broker, expired, error).",
		}, []string{"reason"}),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_events_published_total", Help: "Events accepted by POST /publish.",
		}),
		publishErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_publish_errors_total", Help: "Events POST /publish refused (each event of a batch counts), by HTTP status code.",
		}, []string{"code"}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_events_delivered_total", Help: "Events written to streams (one per event per stream).",
		}),
		replayed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_replayed_events_total",
			Help: "Events delivered from history when a stream started, by reason: resume (after the client's Last-Event-ID), or the reason of the herald.reset before them (truncated, epoch, unknown-cursor, ...).",
		}, []string{"reason"}),
		resets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_resets_total", Help: "herald.reset events sent, by reason (truncated, epoch, unknown-cursor, failover).",
		}, []string{"reason"}),
		slowDisconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_slow_consumer_disconnects_total", Help: "Streams disconnected because they fell more than --queue-limit events behind.",
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "herald_delivery_latency_seconds", Help: "Time from publish to the write of the event to a stream.",
			Buckets: LatencyBuckets,
		}),
		brokerUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_broker_up", Help: "1 when the broker can reach its backing store, 0 otherwise.",
		}),
		reconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_broker_pubsub_reconnects_total",
			Help: "Redis pub/sub connections replaced, counted when the new one answers, by why the old one was given up (unanswered: it stopped answering, e.g. a dead host without RST; error: it failed; demoted: with Sentinel, its server is no longer the primary).",
		}, []string{"reason"}),
	}
	m.Registry.MustRegister(
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewGoCollector(),
		m.connections, m.streams, m.streamsClosed, m.published, m.publishErrors,
		m.delivered, m.replayed, m.resets, m.slowDisconnects, m.latency, m.brokerUp,
		m.reconnects,
	)
	m.maxConnections = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "herald_max_connections", Help: "The configured --max-connections: concurrent streams beyond which new ones get 503; 0 = no limit.",
	})
	m.Registry.MustRegister(m.maxConnections)
	// Pre-create the usual label values so that they are exported at 0.
	for _, r := range []string{"client", "slow", "drain", "broker", "error"} {
		m.streamsClosed.WithLabelValues(r)
	}
	for _, code := range []string{"400", "403", "405", "413", "415", "422", "500", "503"} {
		m.publishErrors.WithLabelValues(code)
	}
	for _, r := range []broker.ResetReason{broker.ReasonTruncated, broker.ReasonEpoch, broker.ReasonUnknown, broker.ReasonFailover} {
		m.resets.WithLabelValues(string(r))
		m.replayed.WithLabelValues(string(r))
	}
	m.replayed.WithLabelValues(replayResume)
	for _, r := range []string{redisbroker.ReconnectUnanswered, redisbroker.ReconnectError, redisbroker.ReconnectDemoted} {
		m.reconnects.WithLabelValues(r)
	}
	return m
}

// Handler serves the registry in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}

// replayResume is the herald_replayed_events_total reason of events that
// followed the client's Last-Event-ID.
const replayResume = "resume"

// streamMetrics returns the stream handler's hooks.
func (m *Metrics) streamMetrics() sse.Metrics {
	return sse.Metrics{
		StreamOpened: m.StreamOpened,
		StreamClosed: m.StreamClosed,
		Delivered:    m.Delivered,
		Replayed:     m.Replayed,
		Reset:        m.Reset,
	}
}

// StreamOpened counts a new stream.
func (m *Metrics) StreamOpened() {
	m.streams.Inc()
	m.connections.Inc()
}

// StreamClosed counts the end of a stream; reason "slow" also counts a slow
// consumer disconnect.
func (m *Metrics) StreamClosed(reason sse.CloseReason) {
	m.connections.Dec()
	m.streamsClosed.WithLabelValues(string(reason)).Inc()
	if reason == sse.CloseSlow {
		m.slowDisconnects.Inc()
	}
}

// Delivered counts one event written to one stream and observes its
// publish-to-deliver latency when the publish time is known.
func (m *Metrics) Delivered(ev *broker.Event, now time.Time) {
	m.delivered.Inc()
	if ev != nil && !ev.Time.IsZero() {
		d := now.Sub(ev.Time)
		if d < 0 {
			d = 0
		}
		m.latency.Observe(d.Seconds())
	}
}

// Reset counts a herald.reset event.
func (m *Metrics) Reset(topic string, reason broker.ResetReason) {
	m.resets.WithLabelValues(string(reason)).Inc()
}

// Replayed counts events delivered from history, by why: after the
// client's Last-Event-ID ("resume"), or after a reset (its reason).
func (m *Metrics) Replayed(n int, after broker.ResetReason) {
	if n <= 0 {
		return
	}
	reason := replayResume
	if after != "" {
		reason = string(after)
	}
	m.replayed.WithLabelValues(reason).Add(float64(n))
}

// Published counts an accepted publish.
func (m *Metrics) Published() { m.published.Inc() }

// PublishError counts a refused publish by its HTTP status.
func (m *Metrics) PublishError(status int) {
	m.publishErrors.WithLabelValues(strconv.Itoa(status)).Inc()
}

// BrokerReconnected counts a replaced pub/sub connection of the Redis
// broker (redisbroker.Config.OnReconnect).
func (m *Metrics) BrokerReconnected(reason string) { m.reconnects.WithLabelValues(reason).Inc() }

// SetBrokerUp records whether the broker reaches its backing store.
func (m *Metrics) SetBrokerUp(up bool) {
	m.up.Store(up)
	if up {
		m.brokerUp.Set(1)
	} else {
		m.brokerUp.Set(0)
	}
}

// SetMaxConnections records the configured stream limit (0 = none).
func (m *Metrics) SetMaxConnections(n int) { m.maxConnections.Set(float64(n)) }

// registerBroker adds the metrics a broker can tell: when it last handed
// this replica a live event (both brokers), and the events refills
// recovered (Redis).
func (m *Metrics) registerBroker(b broker.Broker) {
	if lb, ok := b.(interface{ LastLiveEvent() time.Time }); ok {
		m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "herald_broker_last_event_timestamp_seconds",
			Help: "When the broker last handed this replica a live event (Unix time; 0: never). time() minus it is how long the replica has heard nothing.",
		}, func() float64 {
			t := lb.LastLiveEvent()
			if t.IsZero() {
				return 0
			}
			return float64(t.UnixNano()) / 1e9
		}))
	}
	if rb, ok := b.(*redisbroker.Broker); ok {
		m.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "herald_broker_refilled_events_total",
			Help: "Events live subscribers were given from the Redis streams after a gap in the pub/sub feed (a replaced connection, a lapsed subscription).",
		}, func() float64 { return float64(rb.Refilled()) }))
	}
}

// brokerIsUp reports the last SetBrokerUp.
func (m *Metrics) brokerIsUp() bool { return m.up.Load() }

// sample reads the counters the cluster view's rates come from.
func (m *Metrics) sample(now time.Time) sample {
	s := sample{at: now, delivered: readCounter(m.delivered), published: readCounter(m.published)}
	var d dto.Metric
	if m.latency.Write(&d) == nil && d.Histogram != nil {
		s.buckets = make([]uint64, 0, len(d.Histogram.Bucket)+1)
		for _, b := range d.Histogram.Bucket {
			s.buckets = append(s.buckets, b.GetCumulativeCount())
		}
		s.buckets = append(s.buckets, d.Histogram.GetSampleCount())
	}
	return s
}

func readCounter(c prometheus.Counter) uint64 {
	var d dto.Metric
	if c.Write(&d) != nil || d.Counter == nil {
		return 0
	}
	return uint64(d.Counter.GetValue())
}
