package server

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/url"
	"os"
	"strconv"
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

// ParseConfig reads the configuration from args (without the program name)
// and the environment (getenv, usually os.Getenv). A flag beats its
// environment twin, which beats the default. Usage and flag errors are
// written to output. It returns ErrHelp for --help, and a *ConfigError
// naming the flag or variable for anything invalid, including leftover
// arguments.
func ParseConfig(args []string, getenv func(string) string, output io.Writer) (Config, error) {
	cfg, _, err := ParseCommand(args, getenv, output, Command{})
	return cfg, err
}

// ParseCommand is ParseConfig for a subcommand of the herald binary that
// takes the server's settings too (herald config, herald token): cmd adds
// the subcommand's own flags, which have no environment twin. It also
// returns every server setting with its effective value and source, even
// when the configuration does not validate (then with the *ConfigError);
// the settings are nil when a flag or variable could not be parsed at all.
func ParseCommand(args []string, getenv func(string) string, output io.Writer, cmd Command) (Config, []Setting, error) {
	cfg := DefaultConfig()
	fs := flag.NewFlagSet("herald", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned, usage printed on request

	var (
		cors     = stringList{list: &cfg.CORSOrigins}
		level    = levelValue{&cfg.LogLevel}
		format   = choiceValue{p: &cfg.LogFormat, choices: []string{"text", "json"}}
		maxEvent = sizeValue{&cfg.MaxEventBytes}
		maxBody  = sizeValue{&cfg.MaxBodyBytes}
	)
	fs.StringVar(&cfg.Addr, "addr", cfg.Addr, "listen address (host:port)")
	fs.StringVar(&cfg.RedisURL, "redis-url", cfg.RedisURL, "Redis URL for the Redis broker: redis://host:6379/0, Sentinel redis://s1:26379?master_name=M&addr=s2:26379, Cluster redis://n1:6379?addr=n2:6379 with --redis-cluster; empty uses the in-process broker")
	fs.BoolVar(&cfg.RedisCluster, "redis-cluster", cfg.RedisCluster, "--redis-url names Redis Cluster nodes (redis://node1:6379?addr=node2:6379...)")
	fs.IntVar(&cfg.RedisWaitReplicas, "redis-wait-replicas", cfg.RedisWaitReplicas, "acknowledge a publish only once WAIT confirmed it reached this many replicas (0 = off)")
	fs.Var(durationValue{&cfg.RedisWaitTimeout}, "redis-wait-timeout", "deadline of that WAIT; past it the publish answers 503 (the event may or may not have been kept)")
	fs.StringVar(&cfg.RedisPrefix, "redis-prefix", cfg.RedisPrefix, "prefix of every Redis key")
	fs.Var(durationValue{&cfg.Heartbeat}, "heartbeat", "interval of heartbeat comments on streams")
	fs.IntVar(&cfg.HistorySize, "history-size", cfg.HistorySize, "events kept per topic for resume")
	fs.Var(durationValue{&cfg.HistoryTTL}, "history-ttl", "age limit of kept events (0 = no age limit)")
	fs.IntVar(&cfg.QueueLimit, "queue-limit", cfg.QueueLimit, "events that may wait for one stream before it is disconnected as too slow")
	fs.IntVar(&cfg.MaxTopics, "max-topics", cfg.MaxTopics, "topics one stream may follow")
	fs.IntVar(&cfg.MaxConnections, "max-connections", cfg.MaxConnections, "concurrent streams (0 = no limit); beyond it new streams get 503")
	fs.Var(&maxEvent, "max-event-bytes", "limit on the data of one published event (bytes, or with KiB/MiB)")
	fs.Var(&maxBody, "max-body-bytes", "limit on the body of a publish request (bytes, or with KiB/MiB)")
	fs.IntVar(&cfg.MaxBatch, "max-batch", cfg.MaxBatch, "events one publish request (JSON array or NDJSON) may carry")
	fs.Var(durationValue{&cfg.IdempotencyWindow}, "idempotency-window", "how long a publish's idempotency key is remembered per topic (0 = keys off)")
	fs.IntVar(&cfg.IdempotencyKeys, "idempotency-keys", cfg.IdempotencyKeys, "idempotency keys the in-process broker remembers at most (the oldest goes first)")
	fs.Var(durationValue{&cfg.DrainTimeout}, "drain-timeout", "deadline of the graceful shutdown after SIGTERM/SIGINT")
	fs.Var(durationValue{&cfg.DrainDelay}, "drain-delay", "time /readyz answers 503 before streams are closed at shutdown")
	fs.Var(durationValue{&cfg.DrainRetry}, "drain-retry", "reconnect delay (jittered) sent to streams closed at shutdown")
	fs.Var(durationValue{&cfg.WriteTimeout}, "write-timeout", "deadline of each write to a stream")
	fs.Var(durationValue{&cfg.PublishTimeout}, "publish-timeout", "deadline of the broker call of one POST /publish (503 past it)")
	fs.BoolVar(&cfg.PublishAllow, "publish-allow", cfg.PublishAllow, "allow POST /publish from any address without auth (default: loopback only)")
	fs.Var(&cors, "cors-origins", "comma-separated origins allowed to use the API from a browser (* for any)")
	fs.StringVar(&cfg.JWTSecret, "jwt-secret", cfg.JWTSecret, "HMAC key (at least 32 bytes) of HS256/384/512 tokens; turns authentication on")
	fs.StringVar(&cfg.JWTPublicKeyFile, "jwt-public-key-file", cfg.JWTPublicKeyFile, "PEM public key (RSA, ECDSA or Ed25519) of RS*/PS*/ES*/EdDSA tokens; turns authentication on")
	fs.Var(durationValue{&cfg.JWTLeeway}, "jwt-leeway", "clock-skew allowance on a token's exp and nbf")
	fs.StringVar(&cfg.JWTAudience, "jwt-audience", cfg.JWTAudience, "if set, tokens must name it in aud")
	fs.StringVar(&cfg.JWTIssuer, "jwt-issuer", cfg.JWTIssuer, "if set, tokens must have it as iss")
	fs.StringVar(&cfg.APIKey, "api-key", cfg.APIKey, "static key (at least 16 bytes) that lets services publish to every topic with Authorization: Bearer <key>")
	fs.StringVar(&cfg.APIKeyFile, "api-key-file", cfg.APIKeyFile, "file holding the API key (instead of --api-key)")
	fs.StringVar(&cfg.AdminKey, "admin-key", cfg.AdminKey, "static key (at least 16 bytes) that grants the admin API (/api/..., the status page's data) with Authorization: Bearer <key>")
	fs.StringVar(&cfg.AdminKeyFile, "admin-key-file", cfg.AdminKeyFile, "file holding the admin key (instead of --admin-key)")
	fs.BoolVar(&cfg.AdminAllow, "admin-allow", cfg.AdminAllow, "allow the admin API from any address when no admin key or tokens are configured (default: loopback only)")
	fs.StringVar(&cfg.NodeID, "node-id", cfg.NodeID, "this replica's name in the cluster view (default <hostname>:<port>)")
	fs.Var(durationValue{&cfg.NodeInterval}, "node-interval", "how often the replica writes its record to the cluster view (it expires after 5 of them)")
	fs.BoolVar(&cfg.AnonymousSubscribe, "anonymous-subscribe", cfg.AnonymousSubscribe, "let subscribers in without a token while authentication is on")
	fs.Float64Var(&cfg.PublishRate, "publish-rate", cfg.PublishRate, "publish requests per second per token, API key or (without auth) peer address; 0 = no limit")
	fs.IntVar(&cfg.PublishBurst, "publish-burst", cfg.PublishBurst, "publish requests allowed at once above --publish-rate")
	fs.IntVar(&cfg.MaxLastEventIDBytes, "max-last-event-id-bytes", cfg.MaxLastEventIDBytes, "limit on the Last-Event-ID header (0 = 4096, more if --max-topics needs it)")
	fs.Var(durationValue{&cfg.ReadHeaderTimeout}, "read-header-timeout", "deadline for a client to send its request headers (against slowloris)")
	fs.Var(durationValue{&cfg.IdleTimeout}, "idle-timeout", "keep-alive connections idle this long between requests are closed")
	fs.Var(&level, "log-level", "log level: debug, info, warn or error")
	fs.Var(&format, "log-format", "log format: text or json")
	fs.Usage = func() {} // printed below for --help only
	own := cmd.define(fs)

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			writeUsage(output, fs, cmd, own)
			return cfg, nil, ErrHelp
		}
		return cfg, nil, &ConfigError{Setting: flagNameOf(err), Err: err}
	}
	// Environment twins fill what the command line did not set.
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		name := EnvName(f.Name)
		v, ok := lookup(getenv, name)
		if !ok || given[f.Name] || own[f.Name] || envErr != nil {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			envErr = &ConfigError{Setting: name, Err: fmt.Errorf("invalid value %q: %v", v, unwrapFlagErr(err))}
		}
	})
	if envErr != nil {
		return cfg, nil, envErr
	}
	if fs.NArg() > 0 {
		return cfg, nil, &ConfigError{Setting: "arguments", Err: fmt.Errorf("unexpected argument %q (settings are flags: --name=value)", fs.Arg(0))}
	}
	settings := collectSettings(fs, given, own, getenv)
	// Tell which source a bad value came from: a flag given on the command
	// line, else its environment twin.
	setting := func(name string) string {
		if _, fromEnv := lookup(getenv, EnvName(name)); fromEnv && !given[name] {
			return EnvName(name)
		}
		return "--" + name
	}
	if err := cfg.validate(setting); err != nil {
		return cfg, settings, err
	}
	return cfg, settings, nil
}

// Validate checks the configuration, naming the flag of a bad value.
func (c *Config) Validate() error {
	return c.validate(func(name string) string { return "--" + name })
}

func (c *Config) validate(setting func(string) string) error {
	bad := func(name, format string, a ...any) error {
		return &ConfigError{Setting: setting(name), Err: fmt.Errorf(format, a...)}
	}
	if _, port, err := net.SplitHostPort(c.Addr); err != nil {
		return bad("addr", "%q is not host:port: %v", c.Addr, err)
	} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		if _, err := net.LookupPort("tcp", port); err != nil {
			return bad("addr", "bad port %q", port)
		}
	}
	if c.RedisURL != "" {
		if err := redisbroker.CheckURL(c.RedisURL, c.RedisCluster); err != nil {
			name := "redis-url"
			if c.RedisCluster && errors.Is(err, redisbroker.ErrTopology) {
				name = "redis-cluster"
			}
			return bad(name, "%s", redisWords(err.Error()))
		}
	} else {
		if c.RedisCluster {
			return bad("redis-cluster", "needs --redis-url (the cluster's nodes)")
		}
		if c.RedisWaitReplicas > 0 {
			return bad("redis-wait-replicas", "needs --redis-url (the in-process broker has no replicas)")
		}
	}
	if c.RedisWaitReplicas < 0 {
		return bad("redis-wait-replicas", "must not be negative")
	}
	if err := validatePrefix(c.RedisPrefix); err != nil {
		return bad("redis-prefix", "%v", err)
	}
	positive := []struct {
		name string
		v    int64
	}{
		{"heartbeat", int64(c.Heartbeat)},
		{"history-size", int64(c.HistorySize)},
		{"queue-limit", int64(c.QueueLimit)},
		{"max-topics", int64(c.MaxTopics)},
		{"max-event-bytes", c.MaxEventBytes},
		{"max-body-bytes", c.MaxBodyBytes},
		{"max-batch", int64(c.MaxBatch)},
		{"idempotency-keys", int64(c.IdempotencyKeys)},
		{"drain-timeout", int64(c.DrainTimeout)},
		{"drain-retry", int64(c.DrainRetry)},
		{"write-timeout", int64(c.WriteTimeout)},
		{"publish-timeout", int64(c.PublishTimeout)},
		{"publish-burst", int64(c.PublishBurst)},
		{"read-header-timeout", int64(c.ReadHeaderTimeout)},
		{"idle-timeout", int64(c.IdleTimeout)},
		{"node-interval", int64(c.NodeInterval)},
		{"redis-wait-timeout", int64(c.RedisWaitTimeout)},
	}
	for _, p := range positive {
		if p.v <= 0 {
			return bad(p.name, "must be greater than zero")
		}
	}
	nonNegative := []struct {
		name string
		v    int64
	}{
		{"history-ttl", int64(c.HistoryTTL)},
		{"idempotency-window", int64(c.IdempotencyWindow)},
		{"max-connections", int64(c.MaxConnections)},
		{"drain-delay", int64(c.DrainDelay)},
		{"jwt-leeway", int64(c.JWTLeeway)},
		{"max-last-event-id-bytes", int64(c.MaxLastEventIDBytes)},
	}
	for _, p := range nonNegative {
		if p.v < 0 {
			return bad(p.name, "must not be negative")
		}
	}
	if c.DrainDelay >= c.DrainTimeout {
		return bad("drain-delay", "%v must be shorter than --drain-timeout (%v)", c.DrainDelay, c.DrainTimeout)
	}
	for _, o := range c.CORSOrigins {
		if err := validateOrigin(o); err != nil {
			return bad("cors-origins", "%v", err)
		}
	}
	if c.PublishRate < 0 || math.IsNaN(c.PublishRate) || math.IsInf(c.PublishRate, 0) {
		return bad("publish-rate", "must be a number of requests per second, 0 for no limit")
	}
	if c.MaxLastEventIDBytes > 0 && c.MaxLastEventIDBytes < 4+c.MaxTopics*(broker.MaxIDLen+1) {
		return bad("max-last-event-id-bytes", "%d cannot hold the cursor of a stream of --max-topics=%d topics (at least %d)",
			c.MaxLastEventIDBytes, c.MaxTopics, 4+c.MaxTopics*(broker.MaxIDLen+1))
	}
	if c.NodeID != "" {
		if err := validateNodeID(c.NodeID); err != nil {
			return bad("node-id", "%v", err)
		}
	}
	if _, err := c.authorizer(setting); err != nil {
		return err
	}
	return nil
}

// validateNodeID accepts 1-128 printable ASCII characters without spaces:
// the node's name in logs, Redis keys and the cluster view.
func validateNodeID(id string) error {
	if len(id) == 0 || len(id) > 128 {
		return fmt.Errorf("%q must be 1-128 characters", id)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c <= ' ' || c > '~' {
			return fmt.Errorf("%q: only printable ASCII without spaces", id)
		}
	}
	return nil
}

// authorizer builds the authorization the configuration asks for, reading
// the key files. It returns nil without error when none is configured.
func (c *Config) authorizer(setting func(string) string) (*auth.Authorizer, error) {
	bad := func(name string, err error) error {
		return &ConfigError{Setting: setting(name), Err: err}
	}
	ac := auth.Config{
		Secret:             []byte(c.JWTSecret),
		Leeway:             c.JWTLeeway,
		Audience:           c.JWTAudience,
		Issuer:             c.JWTIssuer,
		APIKey:             c.APIKey,
		AdminKey:           c.AdminKey,
		AnonymousSubscribe: c.AnonymousSubscribe,
	}
	if c.JWTLeeway == 0 {
		ac.Leeway = -1 // an explicit 0: no allowance
	}
	if c.JWTSecret != "" && c.JWTPublicKeyFile != "" {
		return nil, bad("jwt-public-key-file", errors.New("set --jwt-secret or --jwt-public-key-file, not both"))
	}
	if c.JWTPublicKeyFile != "" {
		pemData, err := os.ReadFile(c.JWTPublicKeyFile)
		if err != nil {
			return nil, bad("jwt-public-key-file", err)
		}
		ac.PublicKeyPEM = pemData
	}
	// keyFile reads the key a --<name>-file setting names into *dst.
	keyFile := func(name, path, inline string, dst *string) error {
		if path == "" {
			return nil
		}
		if inline != "" {
			return bad(name+"-file", fmt.Errorf("set --%s or --%s-file, not both", name, name))
		}
		key, err := os.ReadFile(path)
		if err != nil {
			return bad(name+"-file", err)
		}
		if *dst = strings.TrimSpace(string(key)); *dst == "" {
			return bad(name+"-file", fmt.Errorf("%s is empty", path))
		}
		return nil
	}
	if err := keyFile("api-key", c.APIKeyFile, c.APIKey, &ac.APIKey); err != nil {
		return nil, err
	}
	if err := keyFile("admin-key", c.AdminKeyFile, c.AdminKey, &ac.AdminKey); err != nil {
		return nil, err
	}
	if len(ac.Secret) == 0 && len(ac.PublicKeyPEM) == 0 && ac.APIKey == "" && ac.AdminKey == "" {
		return nil, nil
	}
	a, err := auth.New(ac)
	if err != nil {
		name := "api-key"
		switch {
		case c.AdminKeyFile != "" && strings.Contains(err.Error(), "admin key"):
			name = "admin-key-file"
		case strings.Contains(err.Error(), "admin key"):
			name = "admin-key"
		case c.APIKeyFile != "" && strings.Contains(err.Error(), "API key"):
			name = "api-key-file"
		case strings.Contains(err.Error(), "API key"):
		case c.JWTPublicKeyFile != "":
			name = "jwt-public-key-file"
		default:
			name = "jwt-secret"
		}
		return nil, bad(name, errors.New(strings.TrimPrefix(err.Error(), "auth: ")))
	}
	return a, nil
}

// validatePrefix applies the Redis broker's rule: 1-64 letters, digits or
// '_' (the prefix also names its Redis function library).
func validatePrefix(p string) error {
	if p == "" || len(p) > 64 {
		return fmt.Errorf("%q must be 1-64 characters", p)
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return fmt.Errorf("%q: only letters, digits and '_' are allowed", p)
		}
	}
	return nil
}

// validateOrigin accepts "*" or a serialized origin: scheme://host[:port].
func validateOrigin(o string) error {
	if o == "*" {
		return nil
	}
	u, err := url.Parse(o)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q is not an origin like https://app.example.com or *", o)
	}
	return nil
}

func lookup(getenv func(string) string, name string) (string, bool) {
	if getenv == nil {
		return "", false
	}
	v := getenv(name)
	return v, v != ""
}

// flagNameOf extracts the flag name from the flag package's error text.
func flagNameOf(err error) string {
	msg := err.Error()
	for _, marker := range []string{" for flag -", "flag provided but not defined: -", "flag needs an argument: -"} {
		if i := strings.Index(msg, marker); i >= 0 {
			name := msg[i+len(marker):]
			if j := strings.IndexAny(name, ": "); j >= 0 {
				name = name[:j]
			}
			return "--" + strings.TrimLeft(name, "-")
		}
	}
	return "flags"
}

// unwrapFlagErr turns fs.Set's error into the value's own message.
func unwrapFlagErr(err error) error {
	if ne := (*strconv.NumError)(nil); errors.As(err, &ne) {
		return ne.Err
	}
	return err
}

func writeUsage(w io.Writer, fs *flag.FlagSet, cmd Command, own map[string]bool) {
	if cmd.Usage != "" {
		fmt.Fprint(w, cmd.Usage)
		fs.VisitAll(func(f *flag.Flag) {
			if own[f.Name] {
				typ, usage := flag.UnquoteUsage(f)
				if typ != "" {
					typ = " " + typ
				}
				fmt.Fprintf(w, "  --%s%s\n    \t%s\n", f.Name, typ, usage)
				if f.DefValue != "" && f.DefValue != "false" {
					fmt.Fprintf(w, "    \t(default %s)\n", f.DefValue)
				}
			}
		})
		fmt.Fprintf(w, "\nServer settings (the same flags and variables as the server):\n")
	} else {
		fmt.Fprintf(w, "Usage: herald [flags]\n\nherald serves Server-Sent Events: GET /events?topic=..., POST /publish, demo page at /.\nEvery flag can also be set with its environment variable; a flag wins over the variable.\n\nFlags:\n")
	}
	fs.VisitAll(func(f *flag.Flag) {
		if own[f.Name] {
			return
		}
		typ, usage := flag.UnquoteUsage(f)
		switch f.Value.(type) {
		case durationValue:
			typ = "duration"
		case *sizeValue:
			typ = "size"
		case *stringList:
			typ = "list"
		case *levelValue, *choiceValue:
			typ = "name"
		}
		if typ != "" {
			typ = " " + typ
		}
		def := f.DefValue
		if def == "" {
			def = `""`
		}
		fmt.Fprintf(w, "  --%s%s\n    \t%s\n    \t(default %s, env %s)\n", f.Name, typ, usage, def, EnvName(f.Name))
	})
}

// stringList is a comma-separated list flag.
type stringList struct{ list *[]string }

func (s *stringList) String() string {
	if s == nil || s.list == nil {
		return ""
	}
	return strings.Join(*s.list, ",")
}

func (s *stringList) Set(v string) error {
	*s.list = nil
	for _, part := range strings.Split(v, ",") {
		if part = strings.TrimSpace(part); part != "" {
			*s.list = append(*s.list, strings.TrimSuffix(part, "/"))
		}
	}
	return nil
}

type levelValue struct{ p *slog.Level }

func (l *levelValue) String() string {
	if l == nil || l.p == nil {
		return "info"
	}
	return strings.ToLower(l.p.String())
}

func (l *levelValue) Set(v string) error {
	switch strings.ToLower(v) {
	case "debug":
		*l.p = slog.LevelDebug
	case "info":
		*l.p = slog.LevelInfo
	case "warn", "warning":
		*l.p = slog.LevelWarn
	case "error":
		*l.p = slog.LevelError
	default:
		return fmt.Errorf("unknown log level %q (want debug, info, warn or error)", v)
	}
	return nil
}

type choiceValue struct {
	p       *string
	choices []string
}

func (c *choiceValue) String() string {
	if c == nil || c.p == nil {
		return ""
	}
	return *c.p
}

func (c *choiceValue) Set(v string) error {
	for _, ch := range c.choices {
		if v == ch {
			*c.p = v
			return nil
		}
	}
	return fmt.Errorf("%q is not one of %s", v, strings.Join(c.choices, ", "))
}

// sizeValue is a byte count: "65536", "64KiB", "64K", "1MiB", "1M".
type sizeValue struct{ p *int64 }

func (s *sizeValue) String() string {
	if s == nil || s.p == nil {
		return "0"
	}
	return formatSize(*s.p)
}

func (s *sizeValue) Set(v string) error {
	n, err := parseSize(v)
	if err != nil {
		return err
	}
	*s.p = n
	return nil
}

func parseSize(v string) (int64, error) {
	s := strings.TrimSpace(v)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size (e.g. 65536, 64KiB, 1MiB)", v)
	}
	return n * mult, nil
}

func formatSize(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + "MiB"
	case n >= 1<<10 && n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + "KiB"
	}
	return strconv.FormatInt(n, 10)
}

// durationValue is a Go duration ("15s", "1m30s") with time's own error
// messages.
type durationValue struct{ p *time.Duration }

func (d durationValue) String() string {
	if d.p == nil {
		return "0s"
	}
	return d.p.String()
}

func (d durationValue) Set(v string) error {
	x, err := time.ParseDuration(strings.TrimSpace(v))
	if err != nil {
		return fmt.Errorf("not a duration like 15s or 2m (%v)", err)
	}
	*d.p = x
	return nil
}
