package server

import (
	"strings"
	"testing"
)

// The configured stream limit is exported, so that saturation can be
// alerted on against it (deployments/prometheus).
func TestMetricsMaxConnections(t *testing.T) {
	for limit, want := range map[int]string{0: "herald_max_connections 0\n", 5000: "herald_max_connections 5000\n"} {
		s := newTestServer(t, func(c *Config) { c.MaxConnections = limit })
		if body := get(t, s.Handler(), "GET", "/metrics", nil).Body.String(); !strings.Contains(body, want) {
			t.Errorf("--max-connections=%d: /metrics lacks %q", limit, strings.TrimSpace(want))
		}
	}
}
