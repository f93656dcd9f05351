package server

import (
	"bytes"
	"errors"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"
)

func envMap(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestParseConfigDefaults(t *testing.T) {
	cfg, err := ParseConfig(nil, envMap(nil), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg, DefaultConfig()) {
		t.Fatalf("got %+v\nwant %+v", cfg, DefaultConfig())
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
}

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		env   map[string]string
		check func(Config) bool
	}{
		{"addr flag", []string{"--addr", "127.0.0.1:9000"}, nil, func(c Config) bool { return c.Addr == "127.0.0.1:9000" }},
		{"addr env", nil, map[string]string{"HERALD_ADDR": ":9001"}, func(c Config) bool { return c.Addr == ":9001" }},
		{"flag beats env", []string{"-addr=:9002"}, map[string]string{"HERALD_ADDR": ":9001"}, func(c Config) bool { return c.Addr == ":9002" }},
		{"redis url env", nil, map[string]string{"HERALD_REDIS_URL": "redis://localhost:6379/0"}, func(c Config) bool { return c.RedisURL == "redis://localhost:6379/0" }},
		{"redis prefix", []string{"--redis-prefix=hx"}, nil, func(c Config) bool { return c.RedisPrefix == "hx" }},
		{"redis sentinel url", []string{"--redis-url=redis://:pw@s1:26379?master_name=m&addr=s2:26379&addr=s3:26379&password=x"}, nil, func(c Config) bool {
			return c.RedisURL == "redis://:pw@s1:26379?master_name=m&addr=s2:26379&addr=s3:26379&password=x" && !c.RedisCluster
		}},
		{"redis cluster url", []string{"--redis-url=redis://n1:6379?addr=n2:6379&addr=n3:6379", "--redis-cluster"}, nil, func(c Config) bool { return c.RedisCluster }},
		{"redis cluster env", []string{"--redis-url=redis://n1:6379"}, map[string]string{"HERALD_REDIS_CLUSTER": "true"}, func(c Config) bool { return c.RedisCluster }},
		{"redis wait defaults", nil, nil, func(c Config) bool { return c.RedisWaitReplicas == 0 && c.RedisWaitTimeout == time.Second }},
		{"redis wait", []string{"--redis-url=redis://r:6379", "--redis-wait-replicas=1", "--redis-wait-timeout=250ms"}, nil, func(c Config) bool {
			return c.RedisWaitReplicas == 1 && c.RedisWaitTimeout == 250*time.Millisecond
		}},
		{"heartbeat", []string{"--heartbeat=250ms"}, nil, func(c Config) bool { return c.Heartbeat == 250*time.Millisecond }},
		{"heartbeat env", nil, map[string]string{"HERALD_HEARTBEAT": "1m"}, func(c Config) bool { return c.Heartbeat == time.Minute }},
		{"history", []string{"--history-size", "5", "--history-ttl", "1h"}, nil, func(c Config) bool { return c.HistorySize == 5 && c.HistoryTTL == time.Hour }},
		{"limits", []string{"--queue-limit=7", "--max-topics=3", "--max-connections=100"}, nil, func(c Config) bool {
			return c.QueueLimit == 7 && c.MaxTopics == 3 && c.MaxConnections == 100
		}},
		{"sizes with units", []string{"--max-event-bytes=8KiB", "--max-body-bytes=2M"}, nil, func(c Config) bool {
			return c.MaxEventBytes == 8<<10 && c.MaxBodyBytes == 2<<20
		}},
		{"size plain bytes env", nil, map[string]string{"HERALD_MAX_EVENT_BYTES": "100"}, func(c Config) bool { return c.MaxEventBytes == 100 }},
		{"drain", []string{"--drain-timeout=5s", "--drain-delay=0s", "--drain-retry=200ms"}, nil, func(c Config) bool {
			return c.DrainTimeout == 5*time.Second && c.DrainDelay == 0 && c.DrainRetry == 200*time.Millisecond
		}},
		{"write timeout", []string{"--write-timeout=3s"}, nil, func(c Config) bool { return c.WriteTimeout == 3*time.Second }},
		{"publish timeout default", nil, nil, func(c Config) bool { return c.PublishTimeout == 5*time.Second }},
		{"publish timeout env", nil, map[string]string{"HERALD_PUBLISH_TIMEOUT": "750ms"}, func(c Config) bool { return c.PublishTimeout == 750*time.Millisecond }},
		{"publish allow flag", []string{"--publish-allow"}, nil, func(c Config) bool { return c.PublishAllow }},
		{"publish allow env", nil, map[string]string{"HERALD_PUBLISH_ALLOW": "true"}, func(c Config) bool { return c.PublishAllow }},
		{"publish allow flag false beats env", []string{"--publish-allow=false"}, map[string]string{"HERALD_PUBLISH_ALLOW": "true"}, func(c Config) bool { return !c.PublishAllow }},
		{"cors list", []string{"--cors-origins", "https://a.example, http://b.example:8080/"}, nil, func(c Config) bool {
			return reflect.DeepEqual(c.CORSOrigins, []string{"https://a.example", "http://b.example:8080"})
		}},
		{"cors star env", nil, map[string]string{"HERALD_CORS_ORIGINS": "*"}, func(c Config) bool { return reflect.DeepEqual(c.CORSOrigins, []string{"*"}) }},
		{"log level and format", []string{"--log-level=DEBUG", "--log-format=json"}, nil, func(c Config) bool {
			return c.LogLevel == slog.LevelDebug && c.LogFormat == "json"
		}},
		{"log level env warn", nil, map[string]string{"HERALD_LOG_LEVEL": "warn"}, func(c Config) bool { return c.LogLevel == slog.LevelWarn }},
		{"empty env is unset", nil, map[string]string{"HERALD_ADDR": ""}, func(c Config) bool { return c.Addr == ":8080" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ParseConfig(tt.args, envMap(tt.env), &bytes.Buffer{})
			if err != nil {
				t.Fatalf("ParseConfig: %v", err)
			}
			if !tt.check(cfg) {
				t.Fatalf("unexpected config %+v", cfg)
			}
		})
	}
}

func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		setting string // the setting the error must name
	}{
		{"bad duration", []string{"--heartbeat=soon"}, nil, "--heartbeat"},
		{"bad duration env", nil, map[string]string{"HERALD_HEARTBEAT": "soon"}, "HERALD_HEARTBEAT"},
		{"zero heartbeat", []string{"--heartbeat=0s"}, nil, "--heartbeat"},
		{"negative history size", []string{"--history-size=-1"}, nil, "--history-size"},
		{"negative history size env", nil, map[string]string{"HERALD_HISTORY_SIZE": "-1"}, "HERALD_HISTORY_SIZE"},
		{"bad int env", nil, map[string]string{"HERALD_QUEUE_LIMIT": "many"}, "HERALD_QUEUE_LIMIT"},
		{"negative ttl", []string{"--history-ttl=-1s"}, nil, "--history-ttl"},
		{"negative max connections", []string{"--max-connections=-5"}, nil, "--max-connections"},
		{"zero max topics", []string{"--max-topics=0"}, nil, "--max-topics"},
		{"bad size", []string{"--max-event-bytes=big"}, nil, "--max-event-bytes"},
		{"negative size", []string{"--max-body-bytes=-1"}, nil, "--max-body-bytes"},
		{"zero body", []string{"--max-body-bytes=0"}, nil, "--max-body-bytes"},
		{"unknown log level", []string{"--log-level=loud"}, nil, "--log-level"},
		{"unknown log level env", nil, map[string]string{"HERALD_LOG_LEVEL": "loud"}, "HERALD_LOG_LEVEL"},
		{"unknown log format", []string{"--log-format=xml"}, nil, "--log-format"},
		{"bad redis url", []string{"--redis-url=http://x"}, nil, "--redis-url"},
		{"bad redis url env", nil, map[string]string{"HERALD_REDIS_URL": "nonsense"}, "HERALD_REDIS_URL"},
		{"several addrs without master_name or cluster", []string{"--redis-url=redis://s1:26379?addr=s2:26379"}, nil, "--redis-url"},
		{"several addrs env", nil, map[string]string{"HERALD_REDIS_URL": "redis://s1:26379?addr=s2:26379"}, "HERALD_REDIS_URL"},
		{"empty master_name", []string{"--redis-url=redis://s1:26379?master_name="}, nil, "--redis-url"},
		{"sentinel replica_only", []string{"--redis-url=redis://s1:26379?master_name=m&replica_only=true"}, nil, "--redis-url"},
		{"sentinel url unknown option", []string{"--redis-url=redis://s1:26379?master_name=m&colour=blue"}, nil, "--redis-url"},
		{"sentinel url with cluster", []string{"--redis-url=redis://s1:26379?master_name=m", "--redis-cluster"}, nil, "--redis-cluster"},
		{"sentinel url with cluster env", []string{"--redis-url=redis://s1:26379?master_name=m"}, map[string]string{"HERALD_REDIS_CLUSTER": "true"}, "HERALD_REDIS_CLUSTER"},
		{"cluster without url", []string{"--redis-cluster"}, nil, "--redis-cluster"},
		{"bad cluster url", []string{"--redis-url=redis://n1:6379?addr=n2", "--redis-cluster"}, nil, "--redis-url"},
		{"wait replicas without redis", []string{"--redis-wait-replicas=1"}, nil, "--redis-wait-replicas"},
		{"negative wait replicas", []string{"--redis-url=redis://r:6379", "--redis-wait-replicas=-1"}, nil, "--redis-wait-replicas"},
		{"zero wait timeout", []string{"--redis-wait-timeout=0s"}, nil, "--redis-wait-timeout"},
		{"bad redis prefix", []string{"--redis-prefix=a:b"}, nil, "--redis-prefix"},
		{"empty redis prefix env", nil, map[string]string{"HERALD_REDIS_PREFIX": " "}, "HERALD_REDIS_PREFIX"},
		{"bad addr", []string{"--addr=localhost"}, nil, "--addr"},
		{"bad port", []string{"--addr=:99999"}, nil, "--addr"},
		{"bad cors origin", []string{"--cors-origins=example.com"}, nil, "--cors-origins"},
		{"cors origin with path", []string{"--cors-origins=https://a.example/app"}, nil, "--cors-origins"},
		{"drain delay over timeout", []string{"--drain-delay=30s", "--drain-timeout=10s"}, nil, "--drain-delay"},
		{"jwt secret too short", []string{"--jwt-secret=s3cret"}, nil, "--jwt-secret"},
		{"jwt secret too short env", nil, map[string]string{"HERALD_JWT_SECRET": "s3cret"}, "HERALD_JWT_SECRET"},
		{"jwt secret and key file", []string{"--jwt-secret=" + strings.Repeat("k", 32), "--jwt-public-key-file=/etc/hostname"}, nil, "--jwt-public-key-file"},
		{"missing key file", []string{"--jwt-public-key-file=/nonexistent/key.pem"}, nil, "--jwt-public-key-file"},
		{"key file not a key", []string{"--jwt-public-key-file=/etc/hostname"}, nil, "--jwt-public-key-file"},
		{"negative leeway", []string{"--jwt-leeway=-1s"}, nil, "--jwt-leeway"},
		{"short api key", []string{"--api-key=abc"}, nil, "--api-key"},
		{"short api key env", nil, map[string]string{"HERALD_API_KEY": "abc"}, "HERALD_API_KEY"},
		{"api key and file", []string{"--api-key=" + strings.Repeat("k", 16), "--api-key-file=/etc/hostname"}, nil, "--api-key-file"},
		{"missing api key file", []string{"--api-key-file=/nonexistent"}, nil, "--api-key-file"},
		{"negative publish rate", []string{"--publish-rate=-1"}, nil, "--publish-rate"},
		{"zero publish burst", []string{"--publish-burst=0"}, nil, "--publish-burst"},
		{"last-event-id cap below a cursor", []string{"--max-last-event-id-bytes=100"}, nil, "--max-last-event-id-bytes"},
		{"zero read header timeout", []string{"--read-header-timeout=0s"}, nil, "--read-header-timeout"},
		{"zero idle timeout", []string{"--idle-timeout=0s"}, nil, "--idle-timeout"},
		{"unknown flag", []string{"--nope"}, nil, "--nope"},
		{"extra argument", []string{"serve"}, nil, "arguments"},
		{"bad bool env", nil, map[string]string{"HERALD_PUBLISH_ALLOW": "yes please"}, "HERALD_PUBLISH_ALLOW"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig(tt.args, envMap(tt.env), &bytes.Buffer{})
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("want a *ConfigError, got %v", err)
			}
			if ce.Setting != tt.setting {
				t.Fatalf("error names %q, want %q (%v)", ce.Setting, tt.setting, err)
			}
			if !strings.HasPrefix(err.Error(), tt.setting+": ") {
				t.Fatalf("message %q does not start with the setting", err)
			}
		})
	}
}

func TestHelpListsEveryFlag(t *testing.T) {
	var out bytes.Buffer
	_, err := ParseConfig([]string{"--help"}, envMap(nil), &out)
	if !errors.Is(err, ErrHelp) {
		t.Fatalf("want ErrHelp, got %v", err)
	}
	for _, want := range []string{
		"addr", "redis-url", "redis-cluster", "redis-prefix", "redis-wait-replicas", "redis-wait-timeout", "heartbeat", "history-size", "history-ttl", "queue-limit",
		"max-topics", "max-connections", "max-event-bytes", "max-body-bytes", "drain-timeout", "drain-delay",
		"drain-retry", "write-timeout", "publish-timeout", "publish-allow", "cors-origins", "jwt-secret", "log-level", "log-format",
		"jwt-public-key-file", "jwt-leeway", "jwt-audience", "jwt-issuer", "api-key", "api-key-file",
		"anonymous-subscribe", "publish-rate", "publish-burst", "max-last-event-id-bytes", "read-header-timeout", "idle-timeout",
	} {
		if !strings.Contains(out.String(), "--"+want+" ") && !strings.Contains(out.String(), "--"+want+"\n") {
			t.Errorf("--help does not list --%s", want)
		}
		if !strings.Contains(out.String(), "env "+EnvName(want)+")") {
			t.Errorf("--help does not name %s", EnvName(want))
		}
	}
	for _, def := range []string{"(default :8080,", "(default 15s,", "(default 1000,", "(default 64KiB,", "(default 1MiB,", "(default herald,"} {
		if !strings.Contains(out.String(), def) {
			t.Errorf("--help lacks %q", def)
		}
	}
}

func TestEnvName(t *testing.T) {
	if got := EnvName("redis-url"); got != "HERALD_REDIS_URL" {
		t.Fatal(got)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "65536": 65536, "64KiB": 65536, "64K": 65536, "1MiB": 1 << 20, "2M": 2 << 20, "1GiB": 1 << 30, "10B": 10, " 3 KiB ": 3072} {
		got, err := parseSize(in)
		if err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "1.5M", "KiB", "1TB", "99999999999999999999"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) accepted", in)
		}
	}
	if formatSize(64<<10) != "64KiB" || formatSize(1<<20) != "1MiB" || formatSize(1000) != "1000" {
		t.Error("formatSize")
	}
}
