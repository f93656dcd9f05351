package server

import (
	"flag"
	"log/slog"
	"strings"
	"time"

	"github.com/herald-sse/herald/internal/auth"
	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/broker/membroker"
	"github.com/herald-sse/herald/pkg/broker/redisbroker"
)

// EnvPrefix starts the environment twin of every flag: --redis-url is also
// read from HERALD_REDIS_URL.
const EnvPrefix = "HERALD_"

// Config is the server's configuration. DefaultConfig returns the defaults;
// ParseConfig fills it from flags and environment variables.
type Config struct {
	// Addr is the TCP listen address (host:port). Default ":8080".
	Addr string
	// RedisURL selects the Redis broker (redis://host:6379/0); empty means
	// the in-process broker.
	RedisURL string
	// RedisCluster says RedisURL names Redis Cluster nodes
	// (redis://node1:6379?addr=node2:6379...). Not supported yet: the
	// server refuses to start with it.
	RedisCluster bool
	// RedisPrefix starts every Redis key herald uses. Default "herald".
	RedisPrefix string
	// RedisWaitReplicas, if positive, acknowledges a publish only once
	// WAIT confirmed it reached that many replicas. Default 0 (off).
	RedisWaitReplicas int
	// RedisWaitTimeout bounds that WAIT; past it the publish answers 503
	// (the event may or may not have been kept). Default 1s.
	RedisWaitTimeout time.Duration
	// Heartbeat is the interval of heartbeat comments on a stream. Default 15s.
	Heartbeat time.Duration
	// HistorySize is how many events the broker keeps per topic for resume.
	// Default 1000.
	HistorySize int
	// HistoryTTL drops history older than this; 0 keeps it regardless of age.
	HistoryTTL time.Duration
	// QueueLimit is how many events may wait for one connection before it
	// is disconnected as a slow consumer. Default broker.DefaultQueueLimit.
	QueueLimit int
	// MaxTopics is the number of topics one stream may follow. Default 16.
	MaxTopics int
	// MaxConnections caps concurrent streams (503 + Retry-After beyond it);
	// 0 means no cap.
	MaxConnections int
	// MaxEventBytes limits the data of one published event. Default 64 KiB.
	MaxEventBytes int64
	// MaxBodyBytes limits the body of a publish request. Default 1 MiB.
	MaxBodyBytes int64
	// MaxBatch is the number of events one publish request (a JSON array
	// or NDJSON body) may carry. Default 1000.
	MaxBatch int
	// IdempotencyWindow is how long an idempotency key is remembered per
	// topic; 0 turns keys off. Default 5m.
	IdempotencyWindow time.Duration
	// IdempotencyKeys bounds the keys the in-process broker remembers (the
	// oldest is forgotten first beyond it). Default 100000. The Redis
	// broker keeps every key for its window.
	IdempotencyKeys int
	// DrainTimeout bounds the whole graceful shutdown. Default 25s.
	DrainTimeout time.Duration
	// DrainDelay is how long /readyz answers 503 before streams are closed,
	// so load balancers stop sending new clients first. Default 2s.
	DrainDelay time.Duration
	// DrainRetry is the reconnect delay (retry:) sent to streams closed by
	// a drain; it is jittered by the stream handler. Default 1s.
	DrainRetry time.Duration
	// WriteTimeout bounds each write to a stream. Default 10s.
	WriteTimeout time.Duration
	// PublishTimeout bounds the broker call of one POST /publish; past it
	// the request answers 503 with Retry-After. Default 5s.
	PublishTimeout time.Duration
	// PublishAllow lets any peer publish when no auth is configured;
	// otherwise only loopback peers may.
	PublishAllow bool
	// CORSOrigins are the origins allowed to use the API from a browser
	// ("*" for any).
	CORSOrigins []string
	// JWTSecret is the HMAC key of subscriber and publisher tokens
	// (HS256/384/512), at least 32 bytes; it turns authentication on.
	JWTSecret string
	// JWTPublicKeyFile is a PEM public key (RSA, ECDSA or Ed25519) that
	// verifies tokens instead of JWTSecret; it turns authentication on.
	JWTPublicKeyFile string
	// JWTLeeway is the clock-skew allowance on a token's exp and nbf.
	// Default 30s.
	JWTLeeway time.Duration
	// JWTAudience, if set, must be among a token's aud values.
	JWTAudience string
	// JWTIssuer, if set, must be a token's iss.
	JWTIssuer string
	// APIKey is a static key (at least 16 bytes) that lets a service
	// publish to every topic with "Authorization: Bearer <key>".
	APIKey string
	// APIKeyFile holds the API key (surrounding whitespace is trimmed);
	// exclusive with APIKey.
	APIKeyFile string
	// AdminKey is a static key (at least 16 bytes) that grants the admin
	// API (/api/nodes, /api/topics, the status stream) with
	// "Authorization: Bearer <key>".
	AdminKey string
	// AdminKeyFile holds the admin key; exclusive with AdminKey.
	AdminKeyFile string
	// AdminAllow lets any peer use the admin API when neither an admin key
	// nor tokens are configured; otherwise only loopback peers may.
	AdminAllow bool
	// NodeID names this replica in the cluster view; empty means
	// "<hostname>:<listen port>".
	NodeID string
	// NodeInterval is how often the replica writes its record to the
	// cluster view (records expire after 5 intervals). Default 1s.
	NodeInterval time.Duration
	// AnonymousSubscribe lets subscribers in without a token while tokens
	// are configured.
	AnonymousSubscribe bool
	// PublishRate limits POST /publish per credential (per peer address
	// without authentication), in requests per second; 0 means no limit.
	PublishRate float64
	// PublishBurst is how many publish requests a credential may make at
	// once above PublishRate. Default 20.
	PublishBurst int
	// MaxLastEventIDBytes caps the Last-Event-ID header (400 beyond); 0
	// means 4096 bytes, raised to fit MaxTopics positions.
	MaxLastEventIDBytes int
	// ReadHeaderTimeout bounds reading a request's headers (slowloris).
	// Default 10s.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes keep-alive connections idle between requests.
	// Default 120s.
	IdleTimeout time.Duration
	// LogLevel is debug, info, warn or error. Default info.
	LogLevel slog.Level
	// LogFormat is text or json. Default text.
	LogFormat string
}

// DefaultConfig returns the configuration used when nothing is set.
func DefaultConfig() Config {
	return Config{
		Addr:             ":8080",
		RedisPrefix:      "herald",
		RedisWaitTimeout: redisbroker.DefaultWaitTimeout,
		Heartbeat:        15 * time.Second,
		HistorySize:      1000,
		QueueLimit:       broker.DefaultQueueLimit,
		MaxTopics:        16,
		MaxEventBytes:    64 << 10,
		MaxBodyBytes:     1 << 20,
		MaxBatch:         1000,

		IdempotencyWindow: broker.DefaultIdempotencyWindow,
		IdempotencyKeys:   membroker.DefaultIdempotencyKeys,
		DrainTimeout:      25 * time.Second,
		DrainDelay:        2 * time.Second,
		DrainRetry:        time.Second,
		WriteTimeout:      10 * time.Second,
		PublishTimeout:    5 * time.Second,
		JWTLeeway:         auth.DefaultLeeway,
		PublishBurst:      20,
		NodeInterval:      time.Second,
		LogLevel:          slog.LevelInfo,
		LogFormat:         "text",

		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
	}
}

// ErrHelp is returned by ParseConfig when --help or -h was given; the usage
// has been written.
var ErrHelp = flag.ErrHelp

// ConfigError names the setting that is wrong.
type ConfigError struct {
	Setting string // "--heartbeat" or "HERALD_HEARTBEAT"
	Err     error
}

func (e *ConfigError) Error() string { return e.Setting + ": " + e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// EnvName returns the environment twin of a flag name: "redis-url" ->
// "HERALD_REDIS_URL".
func EnvName(flagName string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}
