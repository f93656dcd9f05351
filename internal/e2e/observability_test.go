package e2e

import (
	"bufio"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// pendingMetrics are named by the rules and the dashboard before this
// branch's server exports them, with where they come from. A name is
// allowed here only while the registry lacks it; once exported, it is
// checked like any other.
var pendingMetrics = map[string]string{
	"herald_broker_pubsub_reconnects_total": "the Redis broker's pub/sub reconnect counter (branch conn)",
}

// exportedMetrics scrapes a running server's /metrics and returns every
// series name it can export: each family's name, plus _bucket, _sum and
// _count for histograms (and _sum, _count for summaries).
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	resp, err := http.Get(probeServer(t) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	names := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 4 || f[0] != "#" || f[1] != "TYPE" {
			continue
		}
		name, typ := f[2], f[3]
		names[name] = true
		switch typ {
		case "histogram":
			names[name+"_bucket"], names[name+"_sum"], names[name+"_count"] = true, true, true
		case "summary":
			names[name+"_sum"], names[name+"_count"] = true, true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if !names["herald_connections"] || !names["herald_delivery_latency_seconds_bucket"] || !names["go_goroutines"] {
		t.Fatalf("the scrape has no herald, histogram or Go metrics: %v", names)
	}
	return names
}

var (
	promString   = regexp.MustCompile("\"(?:[^\"\\\\]|\\\\.)*\"|'(?:[^'\\\\]|\\\\.)*'|`[^`]*`")
	promMatchers = regexp.MustCompile(`\{[^}]*\}`)
	promRange    = regexp.MustCompile(`\[[^\]]*\]`)
	promGrouping = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promIdent    = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	promKeywords = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true, "atan2": true, "inf": true, "nan": true, "Inf": true, "NaN": true,
		"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true}
	labelValues = regexp.MustCompile(`^\s*label_values\((.*),\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)\s*$`)
)

// promqlNames returns the metric names and recording-rule names (those
// with a colon) a PromQL expression selects: identifiers outside strings,
// label matchers, ranges and grouping clauses that are not function calls
// or keywords. Grafana's label_values(expr, label) is read as expr.
func promqlNames(expr string) []string {
	if m := labelValues.FindStringSubmatch(expr); m != nil {
		expr = m[1]
	}
	e := promString.ReplaceAllString(expr, `""`)
	e = promMatchers.ReplaceAllString(e, " ")
	e = promRange.ReplaceAllString(e, " ")
	e = promGrouping.ReplaceAllString(e, " ")
	var names []string
	for _, loc := range promIdent.FindAllStringIndex(e, -1) {
		id := e[loc[0]:loc[1]]
		if promKeywords[id] {
			continue
		}
		if loc[0] > 0 && (e[loc[0]-1] >= '0' && e[loc[0]-1] <= '9' || e[loc[0]-1] == '.' || e[loc[0]-1] == '$') {
			continue // 5m, 1e3, 0.5, $var
		}
		if rest := strings.TrimLeft(e[loc[1]:], " \t\n"); strings.HasPrefix(rest, "(") {
			continue // a function or aggregation
		}
		if !slices.Contains(names, id) {
			names = append(names, id)
		}
	}
	return names
}

func TestPromqlNames(t *testing.T) {
	for expr, want := range map[string][]string{
		`herald_broker_up == 0`: {"herald_broker_up"},
		`histogram_quantile(0.99, sum by (job, le) (rate(herald_delivery_latency_seconds_bucket{job=~"$job",instance=~"a|b"}[5m])))`:                                     {"herald_delivery_latency_seconds_bucket"},
		`sum by (job) (rate(herald_publish_errors_total{code=~"5.."}[5m])) / (sum without (instance) (rate(herald_events_published_total[$__rate_interval] offset 5m)))`: {"herald_publish_errors_total", "herald_events_published_total"},
		`herald_connections / on (instance) group_left (x) (herald_max_connections > 0)`:                                                                                 {"herald_connections", "herald_max_connections"},
		`job:herald_publish_errors:rate5m{code=~"401|403"} > 0.5 and bool 1e3`:                                                                                           {"job:herald_publish_errors:rate5m"},
		`label_values(herald_connections{job=~"$job"}, instance)`:                                                                                                        {"herald_connections"},
		`count(up{job="herald_x"}) or vector(0)`:                                                                                                                         {"up"},
	} {
		if got := promqlNames(expr); !slices.Equal(got, want) {
			t.Errorf("promqlNames(%s) = %q, want %q", expr, got, want)
		}
	}
}

type ruleFile struct {
	Groups []struct {
		Name  string
		Rules []struct {
			Record      string
			Alert       string
			Expr        string
			For         string
			Labels      map[string]string
			Annotations map[string]string
		}
	}
}

const rulesFile = "prometheus/herald-rules.yml"

func loadRules(t *testing.T) ruleFile {
	t.Helper()
	docs := decodeAll(t, filepath.Join(deployDir, rulesFile))
	if len(docs) != 1 {
		t.Fatalf("%s: %d documents", rulesFile, len(docs))
	}
	raw, err := json.Marshal(docs[0])
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := json.Unmarshal(raw, &rf); err != nil {
		t.Fatal(err)
	}
	return rf
}

// checkExpr fails for a name in expr that herald does not export, or a
// recording rule that the rules file does not define.
func checkExpr(t *testing.T, where, expr string, exported, recorded map[string]bool) {
	t.Helper()
	names := promqlNames(expr)
	if len(names) == 0 {
		t.Errorf("%s: %q selects no metric", where, expr)
	}
	for _, n := range names {
		switch {
		case strings.Contains(n, ":"):
			if !recorded[n] {
				t.Errorf("%s: %s is no recording rule of %s", where, n, rulesFile)
			}
		case exported[n]:
		case pendingMetrics[n] != "":
			t.Logf("%s: %s is not exported yet: %s", where, n, pendingMetrics[n])
		default:
			t.Errorf("%s: herald exports no metric %s (expr %s)", where, n, expr)
		}
	}
}

// TestObservabilityMetricNames checks every metric the alert rules and the
// Grafana dashboard query against the metrics a running server exports.
func TestObservabilityMetricNames(t *testing.T) {
	exported := exportedMetrics(t)
	for n := range pendingMetrics {
		if exported[n] {
			t.Logf("%s is exported now: it can leave pendingMetrics", n)
		}
	}
	rf := loadRules(t)
	recorded := map[string]bool{}
	alerts := 0
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				recorded[r.Record] = true
			}
		}
	}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			where := rulesFile + " " + r.Record + r.Alert
			checkExpr(t, where, r.Expr, exported, recorded)
			if r.Alert != "" {
				alerts++
				if s := r.Labels["severity"]; s != "critical" && s != "warning" {
					t.Errorf("%s: severity %q, want critical or warning", where, s)
				}
				if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
					t.Errorf("%s: needs a summary and a description", where)
				}
			}
		}
	}
	for _, a := range []string{"herald_broker_up", "herald_broker_pubsub_reconnects_total", "herald_slow_consumer_disconnects_total",
		"herald_publish_errors_total", "herald_delivery_latency_seconds_bucket", "herald_max_connections"} {
		covered := false
		for _, g := range rf.Groups {
			for _, r := range g.Rules {
				covered = covered || strings.Contains(r.Expr, a)
			}
		}
		if !covered {
			t.Errorf("no rule uses %s", a)
		}
	}
	if alerts < 6 {
		t.Errorf("%d alerts", alerts)
	}

	// The dashboard: every panel's queries (rows may nest panels) and the
	// template variables' queries.
	raw, err := os.ReadFile(filepath.Join(deployDir, "grafana", "herald.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title      string
		Panels     []dashPanel
		Templating struct {
			List []struct {
				Name  string
				Type  string
				Query any
			}
		}
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("herald.json: %v", err)
	}
	queries := 0
	var walk func([]dashPanel)
	walk = func(ps []dashPanel) {
		for _, p := range ps {
			walk(p.Panels)
			if p.Type != "row" && len(p.Targets) == 0 {
				t.Errorf("dashboard panel %q has no query", p.Title)
			}
			for _, tg := range p.Targets {
				queries++
				checkExpr(t, "dashboard panel "+p.Title, tg.Expr, exported, recorded)
			}
		}
	}
	walk(dash.Panels)
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		q := v.Query
		if m, ok := q.(map[string]any); ok {
			q = m["query"]
		}
		checkExpr(t, "dashboard variable "+v.Name, str(q), exported, recorded)
	}
	if queries < 10 {
		t.Errorf("the dashboard has only %d queries", queries)
	}
}

type dashPanel struct {
	Title   string
	Type    string
	Panels  []dashPanel
	Targets []struct{ Expr string }
}

// TestObservabilityPromtool checks the rules with promtool and runs their
// unit tests (deployments/prometheus/herald-rules_test.yml).
func TestObservabilityPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		unavailable(t, "promtool is not installed (Debian: apt-get install prometheus): %v", err)
	}
	dir := filepath.Join(deployDir, "prometheus")
	for _, args := range [][]string{
		{"check", "rules", "herald-rules.yml"},
		{"test", "rules", "herald-rules_test.yml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		} else if !strings.Contains(string(out), "SUCCESS") {
			t.Errorf("promtool %s said no SUCCESS:\n%s", strings.Join(args, " "), out)
		}
	}
}
