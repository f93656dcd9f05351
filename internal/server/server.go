// Package server is herald's standalone service: configuration, HTTP routes
// (the event stream, publish, health, readiness, metrics, demo page),
// logging and graceful drain. cmd/server is a thin main around Main; tests
// start a Server in-process.
//
// Data path: POST /publish -> Broker -> subscriptions -> sse.TopicHandler
// (GET /events) -> clients.
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herald-sse/herald/internal/auth"
	"github.com/herald-sse/herald/internal/server/statuspage"
	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/broker/membroker"
	"github.com/herald-sse/herald/pkg/sse"
)

// HTTP server limits. There is deliberately no server-wide WriteTimeout: it
// would cut long-lived streams; the stream handler sets per-write deadlines.
// ReadHeaderTimeout and IdleTimeout come from the configuration.
const (
	maxHeaderBytes = 64 << 10
	// publishReadTimeout bounds reading one publish request's body.
	publishReadTimeout = 30 * time.Second
)

// Options are the parts of a Server that tests may replace.
type Options struct {
	// Logger receives the server's logs; nil means a logger built from the
	// configuration writing to stderr.
	Logger *slog.Logger
	// Broker, if set, is used instead of the one the configuration selects.
	// The Server closes it on Shutdown.
	Broker broker.Broker
	// BrokerKind names Broker in logs ("memory", "redis", ...).
	BrokerKind string
}

// Server is one herald replica: an HTTP handler tree around a broker.
// Create it with New, run it with Serve, stop it with Shutdown.
type Server struct {
	cfg     Config
	log     *slog.Logger
	broker  broker.Broker
	kind    string
	metrics *Metrics
	events  *sse.TopicHandler
	auth    *auth.Authorizer // nil without authentication
	handler http.Handler
	http    *http.Server
	nodes   *nodes     // this replica in the cluster view
	status  *statusHub // the status page's stream

	started  atomic.Bool // Serve was called
	draining atomic.Bool // Shutdown was called: /readyz answers 503

	shutdownOnce sync.Once
	shutdownErr  error

	abortCtx context.Context // done after Abort: the drain stops waiting
	abort    context.CancelFunc
}

// New builds a Server from a valid configuration. ctx bounds the broker's
// start-up (connecting to Redis).
func New(ctx context.Context, cfg Config, opts Options) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = NewLogger(cfg, os.Stderr)
	}
	s := &Server{cfg: cfg, log: log, metrics: NewMetrics(), broker: opts.Broker, kind: opts.BrokerKind}
	s.metrics.SetMaxConnections(cfg.MaxConnections)
	a, err := cfg.authorizer(func(name string) string { return "--" + name })
	if err != nil {
		return nil, err
	}
	s.auth = a
	if s.broker == nil {
		b, kind, err := newBroker(ctx, cfg, log, s.metrics)
		if err != nil {
			return nil, err
		}
		s.broker, s.kind = b, kind
	} else {
		s.metrics.SetBrokerUp(true)
	}
	if s.kind == "" {
		s.kind = "custom"
	}
	s.metrics.registerBroker(s.broker)
	if mb, ok := s.broker.(*membroker.Broker); ok {
		s.metrics.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "herald_idempotency_keys_evicted_total",
			Help: "Idempotency keys the in-memory broker forgot before their window ended (--idempotency-keys reached): a retry with one publishes again.",
		}, func() float64 { return float64(mb.KeysEvicted()) }))
	}
	s.events = &sse.TopicHandler{
		Broker: s.broker,
		// The fast path: hijacked HTTP/1.x streams, flusher writes, parked
		// idle streams. Shutdown drains the streams before the HTTP server.
		Hijack:         true,
		Heartbeat:      cfg.Heartbeat,
		WriteTimeout:   cfg.WriteTimeout,
		MaxTopics:      cfg.MaxTopics,
		MaxConnections: cfg.MaxConnections,
		MaxCursorLen:   cfg.MaxLastEventIDBytes,
		Metrics:        s.metrics.streamMetrics(),
		Logger:         log,
	}
	if s.auth.SubscribeProtected() {
		s.events.OnConnect = s.auth.OnConnect(nil)
	}
	s.nodes = newNodes(s)
	s.status = newStatusHub(s.nodes, cfg.Heartbeat, cfg.WriteTimeout)
	s.status.handler.Logger = log
	s.abortCtx, s.abort = context.WithCancel(context.Background())
	s.handler = s.routes()
	s.http = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return s, nil
}

// NewLogger returns the logger the configuration asks for.
func NewLogger(cfg Config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	origins := s.cfg.CORSOrigins

	eventsCORS := &cors{origins: origins, methods: "GET", headers: "Last-Event-ID, Authorization"}
	mux.Handle("/events", eventsCORS.wrap(s.events))

	pub := &publishHandler{
		broker:      s.broker,
		metrics:     s.metrics,
		log:         s.log,
		maxBody:     s.cfg.MaxBodyBytes,
		maxEvent:    s.cfg.MaxEventBytes,
		maxBatch:    s.cfg.MaxBatch,
		timeout:     s.cfg.PublishTimeout,
		noWait:      s.kind == "memory",
		allowRemote: s.cfg.PublishAllow,
		remoteNotice: "publishing is allowed from loopback addresses only because no authentication is configured; " +
			"start herald with --publish-allow (HERALD_PUBLISH_ALLOW=true) to accept publishers from any address",
		crossOrigin: http.NewCrossOriginProtection(),
		auth:        s.auth,
	}
	if s.cfg.PublishRate > 0 {
		pub.limit = newRateLimiter(s.cfg.PublishRate, s.cfg.PublishBurst)
	}
	for _, o := range origins {
		if o == "*" {
			pub.crossOrigin = nil
			break
		}
		if err := pub.crossOrigin.AddTrustedOrigin(o); err != nil {
			// validateOrigin accepted it; keep it out rather than fail.
			s.log.Warn("cors origin not usable for publish", "origin", o, "err", err)
		}
	}
	pubCORS := &cors{origins: origins, methods: "POST", headers: "Content-Type, Authorization, Idempotency-Key"}
	mux.Handle("/publish", pubCORS.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(publishReadTimeout))
		}
		pub.ServeHTTP(w, r)
	})))

	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeText(w, http.StatusOK, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		switch {
		case s.draining.Load():
			writeText(w, http.StatusServiceUnavailable, "draining\n")
		case !s.started.Load():
			writeText(w, http.StatusServiceUnavailable, "starting\n")
		default:
			writeText(w, http.StatusOK, "ready\n")
		}
	})
	mux.Handle("GET /metrics", s.metrics.Handler())
	s.mountAdmin(mux)
	page := statuspage.Handler()
	mux.Handle("GET /status", page)
	mux.Handle("GET /status/", page)
	mountDemo(mux)
	return mux
}

func writeText(w http.ResponseWriter, status int, body string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

// Handler returns the server's routes, for tests that use httptest.
func (s *Server) Handler() http.Handler { return s.handler }

// Metrics returns the server's metrics.
func (s *Server) Metrics() *Metrics { return s.metrics }

// Ready reports what /readyz answers: started and not draining.
func (s *Server) Ready() bool { return s.started.Load() && !s.draining.Load() }

// Serve accepts connections on ln until Shutdown. It logs the start-up
// line, then returns nil after a Shutdown, or the listener's error.
func (s *Server) Serve(ln net.Listener) error {
	s.logStart(ln.Addr())
	s.nodes.listening(ln.Addr())
	s.started.Store(true)
	if err := s.http.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func (s *Server) logStart(addr net.Addr) {
	s.log.Info("herald listening", "addr", addr.String(), "broker", s.kind,
		"history_size", s.cfg.HistorySize, "history_ttl", s.cfg.HistoryTTL, "heartbeat", s.cfg.Heartbeat,
		"gomaxprocs", runtime.GOMAXPROCS(0))
	switch a := s.auth; {
	case a.PublishProtected():
		s.log.Info("authentication on", "tokens", a.Tokens(), "algorithms", a.Algorithms(), "api_key", a.APIKey(),
			"subscribe", map[bool]string{true: "token required", false: "open"}[a.SubscribeProtected()],
			"publish", "credential required")
		if a.Tokens() && !a.SubscribeProtected() {
			s.log.Warn("anyone may subscribe to any topic without a token (--anonymous-subscribe)")
		}
		if !a.Tokens() {
			s.log.Warn("only the API key is configured: anyone may subscribe to any topic; set --jwt-secret or --jwt-public-key-file to protect subscribing")
		}
		if s.cfg.PublishAllow {
			s.log.Warn("--publish-allow has no effect while authentication is on: publishers need a credential")
		}
	case s.cfg.PublishAllow:
		s.log.Warn("publishing is open to every address without authentication (--publish-allow); put herald behind something that authenticates publishers")
	default:
		s.log.Info("no authentication configured: POST /publish is allowed from loopback addresses only; --publish-allow (HERALD_PUBLISH_ALLOW=true) opens it to every address")
	}
}

// Shutdown drains the server: /readyz answers 503 at once; after
// DrainDelay every stream is told to reconnect (after about DrainRetry) and
// closed, new streams get 503; then the HTTP server shuts down and the
// broker closes. ctx bounds the whole sequence; when it is done, remaining
// connections are closed forcibly. Shutdown is idempotent: later calls
// return the first call's result.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutdownOnce.Do(func() { s.shutdownErr = s.shutdown(ctx) })
	return s.shutdownErr
}

func (s *Server) shutdown(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.abortCtx, cancel)
	defer stop()
	start := time.Now()
	s.draining.Store(true)
	s.log.Info("draining: readiness off", "delay", s.cfg.DrainDelay, "streams", s.events.Connections())
	if s.cfg.DrainDelay > 0 {
		t := time.NewTimer(s.cfg.DrainDelay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	var errs []error
	n := s.events.Connections()
	s.nodes.shutdown(ctx) // out of the cluster view at once
	statusDrained := make(chan error, 1)
	go func() { statusDrained <- s.status.shutdown(ctx, s.cfg.DrainRetry) }()
	if err := s.events.Drain(ctx, s.cfg.DrainRetry); err != nil {
		errs = append(errs, fmt.Errorf("draining streams: %w", err))
	}
	if err := <-statusDrained; err != nil {
		errs = append(errs, fmt.Errorf("draining status streams: %w", err))
	}
	s.log.Info("draining: streams closed", "streams", n, "left", s.events.Connections())
	if err := s.http.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("http shutdown: %w", err))
		_ = s.http.Close()
	}
	if err := s.broker.Close(); err != nil && !errors.Is(err, broker.ErrClosed) {
		errs = append(errs, fmt.Errorf("closing broker: %w", err))
	}
	err := errors.Join(errs...)
	if err != nil {
		s.log.Warn("drain ended with errors", "took", time.Since(start).Round(time.Millisecond), "err", err)
	} else {
		s.log.Info("drained", "took", time.Since(start).Round(time.Millisecond))
	}
	return err
}

// Abort ends a drain in progress at once: streams and connections are
// closed without waiting. Shutdown still closes the broker.
func (s *Server) Abort() {
	s.abort()
	_ = s.http.Close()
}

// Run serves on ln until ctx is done, then shuts down within DrainTimeout.
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	select {
	case err := <-served:
		// The listener failed: stop everything else.
		sctx, cancel := context.WithTimeout(context.Background(), s.cfg.DrainTimeout)
		defer cancel()
		return errors.Join(err, s.Shutdown(sctx))
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.DrainTimeout)
	defer cancel()
	err := s.Shutdown(sctx)
	if serr := <-served; serr != nil {
		err = errors.Join(err, serr)
	}
	return err
}

// Main is the whole program: it parses args and the environment (getenv),
// listens, serves until the first value on signals, drains, and returns the
// exit code: 0 after a clean drain or --help, 1 on a run-time failure or a
// second signal (the drain is abandoned), 2 for invalid configuration.
// Logs go to stderr.
func Main(args []string, getenv func(string) string, stderr io.Writer, signals <-chan os.Signal) int {
	cfg, err := ParseConfig(args, getenv, stderr)
	if errors.Is(err, ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "herald: invalid configuration: %v\n(run with --help to list the settings)\n", err)
		return 2
	}
	log := NewLogger(cfg, stderr)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	startCtx, startCancel := context.WithTimeout(ctx, 30*time.Second)
	s, err := New(startCtx, cfg, Options{Logger: log})
	startCancel()
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		log.Error("cannot listen", "addr", cfg.Addr, "err", err)
		_ = s.broker.Close()
		return 1
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, ln) }()
	select {
	case err := <-done:
		return exitCode(log, err)
	case sig := <-signals:
		log.Info("signal received: draining (send it again to exit at once)", "signal", sig.String(), "timeout", cfg.DrainTimeout)
		cancel()
	}
	select {
	case err := <-done:
		return exitCode(log, err)
	case sig := <-signals:
		log.Warn("second signal: exiting without finishing the drain", "signal", sig.String())
		s.Abort()
		select {
		case <-done:
		case <-time.After(time.Second):
		}
		return 1
	}
}

func exitCode(log *slog.Logger, err error) int {
	if err != nil {
		log.Error("stopped with an error", "err", err)
		return 1
	}
	return 0
}
