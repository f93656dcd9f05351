package server

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
)

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
