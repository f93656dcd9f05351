package server

import (
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/herald-sse/herald/internal/testredis"
)

// TestRedisTopologyAtStart: a Redis that answers as another topology than
// the settings say stops the server at start with a message naming the
// setting to change.
func TestRedisTopologyAtStart(t *testing.T) {
	plain := testredis.Start(t)
	node := testredis.Start(t, testredis.WithArgs("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"))
	for _, tc := range []struct {
		name    string
		url     string
		cluster bool
		setting string
		mention string
	}{
		{"standalone URL at a cluster node", node.URL(), false, "--redis-url", "--redis-cluster"},
		{"--redis-cluster at a standalone server", plain.URL(), true, "--redis-cluster", "not a Redis Cluster node"},
		{"sentinel URL at a standalone server", "redis://" + plain.Addr + "?master_name=m", false, "--redis-url", "not a Redis Sentinel"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.RedisURL, cfg.RedisCluster = tc.url, tc.cluster
			if err := cfg.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			s, err := New(t.Context(), cfg, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err == nil {
				_ = s.Shutdown(t.Context())
				t.Fatal("the server started")
			}
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Setting != tc.setting || !strings.Contains(err.Error(), tc.mention) {
				t.Fatalf("New: %v; want a *ConfigError naming %s and mentioning %q", err, tc.setting, tc.mention)
			}
			t.Logf("%v", err)
		})
	}
}
