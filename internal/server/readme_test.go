package server

import (
	"io"
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestReadmeConfigTable: the README's configuration table lists every
// server flag once, with its environment variable and its default as
// --help shows it — and nothing else.
func TestReadmeConfigTable(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, settings, err := ParseCommand(nil, func(string) string { return "" }, io.Discard, Command{})
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("^\\| `--([a-z0-9-]+)` \\| `([A-Z0-9_]+)` \\| ([^|]*) \\|")
	documented := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		m := row.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		name, env, def := m[1], m[2], strings.TrimSpace(m[3])
		if documented[name] {
			t.Errorf("README documents --%s twice", name)
		}
		documented[name] = true
		var s *Setting
		for i := range settings {
			if settings[i].Flag == name {
				s = &settings[i]
			}
		}
		if s == nil {
			t.Errorf("README documents --%s, which the server does not have", name)
			continue
		}
		if env != s.Env {
			t.Errorf("--%s: README says %s, the server reads %s", name, env, s.Env)
		}
		want := s.Default
		if want == "" {
			want = "empty"
		}
		if d := strings.Trim(def, "`"); d != want {
			t.Errorf("--%s: README default %s, the server's %q", name, def, want)
		}
	}
	for _, s := range settings {
		if !documented[s.Flag] {
			t.Errorf("--%s (%s) is missing from the README's configuration table", s.Flag, s.Env)
		}
	}
}

// TestReadmeMetricsTable: every herald_* metric the server exports is in
// the README's metrics table, and the table names no metric herald does
// not export (the Redis broker's own are registered only with Redis).
func TestReadmeMetricsTable(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("^\\| `(herald_[a-z_]+)(\\{[a-z,]+\\})?` \\|")
	documented := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		if m := row.FindStringSubmatch(line); m != nil {
			documented[m[1]] = true
		}
	}
	s := newMemServer(t, nil)
	mfs, err := s.Metrics().Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	exported := map[string]bool{"herald_broker_refilled_events_total": true} // Redis only
	for _, mf := range mfs {
		if name := mf.GetName(); strings.HasPrefix(name, "herald_") {
			exported[name] = true
			if !documented[name] {
				t.Errorf("%s is exported but not in the README's metrics table", name)
			}
		}
	}
	for name := range documented {
		if !exported[name] {
			t.Errorf("the README documents %s, which herald does not export", name)
		}
	}
	if len(documented) < 10 {
		t.Errorf("only %d metrics found in the README", len(documented))
	}
}
