package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// compareFile reads JSON summaries (one per line; other lines are
// skipped) and writes a Markdown table per scenario: each target's figures
// and its ratio to the baseline target. Several runs of one scenario and
// target are reduced to their median.
func compareFile(path, baseline string, w io.Writer) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	runs, err := readSummaries(f)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	writeComparison(w, runs, baseline)
	return nil
}

func readSummaries(r io.Reader) ([]result, error) {
	var out []result
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var res result
		if err := json.Unmarshal([]byte(line), &res); err != nil {
			return nil, err
		}
		out = append(out, res)
	}
	return out, sc.Err()
}

// metric is one row of the comparison.
type metric struct {
	name   string
	value  func(*result) float64
	format string
	// applies reports whether the row makes sense for this run.
	applies func(*result) bool
}

var metrics = []metric{
	{"publishes/s", func(r *result) float64 { return r.PublishPerSec }, "%.0f", func(r *result) bool { return r.Published > 0 }},
	{"deliveries/s", func(r *result) float64 { return r.DeliveriesPerS }, "%.0f", func(r *result) bool { return r.Published > 0 }},
	{"latency p50 ms", func(r *result) float64 { return r.Latency.P50 }, "%.2f", func(r *result) bool { return r.Published > 0 }},
	{"latency p99 ms", func(r *result) float64 { return r.Latency.P99 }, "%.2f", func(r *result) bool { return r.Published > 0 }},
	{"server CPU (cores)", func(r *result) float64 { return r.ServerCPU }, "%.2f", func(r *result) bool { return r.Published > 0 && r.ServerCPU > 0 }},
	{"load-tool CPU (cores)", func(r *result) float64 { return r.ToolCPU }, "%.2f", func(r *result) bool { return r.Published > 0 }},
	{"other CPU (cores)", func(r *result) float64 { return r.OtherCPU }, "%.2f", func(r *result) bool { return r.Published > 0 }},
	{"server CPU µs/event", func(r *result) float64 { return r.ProcServerCPU * 1e6 / float64(r.Published) }, "%.1f", func(r *result) bool { return r.Published > 0 && r.ProcServerCPU > 0 }},
	{"server CPU ns/delivery", func(r *result) float64 { return r.ProcServerCPU * 1e9 / float64(r.Delivered) }, "%.0f", func(r *result) bool { return r.Delivered > 0 && r.ProcServerCPU > 0 }},
	{"Redis CPU µs/event", func(r *result) float64 { return r.ProcRedisCPU * 1e6 / float64(r.Published) }, "%.1f", func(r *result) bool { return r.Published > 0 && r.ProcRedisCPU > 0 }},
	{"Redis CPU ns/delivery", func(r *result) float64 { return r.ProcRedisCPU * 1e9 / float64(r.Delivered) }, "%.0f", func(r *result) bool { return r.Delivered > 0 && r.ProcRedisCPU > 0 }},
	{"connect all ms", func(r *result) float64 { return r.ConnectAll }, "%.0f", func(r *result) bool { return r.Subs >= 1000 && r.ConnectAll > 0 }},
	{"held connections", func(r *result) float64 { return float64(r.Held) }, "%.0f", func(r *result) bool { return r.Subs >= 1000 }},
	{"RSS bytes/conn", func(r *result) float64 { return float64(r.BytesPerConn) }, "%.0f", func(r *result) bool { return r.Subs >= 1000 && r.BytesPerConn > 0 }},
	{"heartbeat gap p99 ms", func(r *result) float64 { return r.Heartbeats.Gap.P99 }, "%.0f", func(r *result) bool { return r.Heartbeats != nil && r.Heartbeats.Gap.N > 0 }},
	{"heartbeats late+overdue", func(r *result) float64 { return float64(r.Heartbeats.Late + r.Heartbeats.Overdue) }, "%.0f", func(r *result) bool {
		// Judged: an expected interval, and streams watched longer than it.
		return r.Heartbeats != nil && r.Heartbeats.IntervalMs > 0 && r.Heartbeats.ObservedMaxMs > r.Heartbeats.IntervalMs+r.Heartbeats.ToleranceMs
	}},
	{"incomplete subs", func(r *result) float64 { return float64(r.IncompleteSubs) }, "%.0f", func(r *result) bool { return r.Published > 0 }},
	{"lost+dup+reord", func(r *result) float64 { return float64(r.Lost + r.Duplicated + r.Reordered) }, "%.0f", func(r *result) bool { return r.Published > 0 }},
	{"errors", func(r *result) float64 { return float64(r.ConnectErrors + r.StreamErrors + int(r.PublishErrors)) }, "%.0f", func(*result) bool { return true }},
}

func writeComparison(w io.Writer, runs []result, baseline string) {
	var scenarios, targets []string
	for _, r := range runs {
		if !slices.Contains(scenarios, r.Scenario) {
			scenarios = append(scenarios, r.Scenario)
		}
		if !slices.Contains(targets, r.Target) {
			targets = append(targets, r.Target)
		}
	}
	// Baseline first.
	if i := slices.Index(targets, baseline); i > 0 {
		targets = append([]string{baseline}, slices.Delete(targets, i, i+1)...)
	}
	maxRuns := 0
	counts := map[[2]string]int{}
	for _, r := range runs {
		k := [2]string{r.Scenario, r.Target}
		counts[k]++
		maxRuns = max(maxRuns, counts[k])
	}
	if maxRuns > 1 {
		fmt.Fprintf(w, "Medians of up to %d runs per scenario and target; ratio = target / %s.\n\n", maxRuns, baseline)
	} else {
		fmt.Fprintf(w, "One run per scenario and target; ratio = target / %s.\n\n", baseline)
	}
	fmt.Fprintf(w, "| scenario | metric |")
	for _, t := range targets {
		if t == baseline {
			fmt.Fprintf(w, " %s |", t)
		} else {
			fmt.Fprintf(w, " %s | ratio |", t)
		}
	}
	fmt.Fprintf(w, "\n|---|---|")
	for _, t := range targets {
		if t == baseline {
			fmt.Fprintf(w, "---:|")
		} else {
			fmt.Fprintf(w, "---:|---:|")
		}
	}
	fmt.Fprintln(w)
	for _, sc := range scenarios {
		group := map[string][]result{}
		for _, r := range runs {
			if r.Scenario == sc {
				group[r.Target] = append(group[r.Target], r)
			}
		}
		for _, m := range metrics {
			vals := map[string]float64{}
			any := false
			for _, t := range targets {
				var xs []float64
				for i := range group[t] {
					if m.applies(&group[t][i]) {
						xs = append(xs, m.value(&group[t][i]))
					}
				}
				if len(xs) > 0 {
					vals[t] = median(xs)
					any = true
				}
			}
			if !any {
				continue
			}
			fmt.Fprintf(w, "| %s | %s |", sc, m.name)
			base, hasBase := vals[baseline]
			for _, t := range targets {
				v, ok := vals[t]
				cell := "—"
				if ok {
					cell = fmt.Sprintf(m.format, v)
				}
				if t == baseline {
					fmt.Fprintf(w, " %s |", cell)
					continue
				}
				ratio := "—"
				if ok && hasBase && base != 0 {
					ratio = fmt.Sprintf("%.2f×", v/base)
				}
				fmt.Fprintf(w, " %s | %s |", cell, ratio)
			}
			fmt.Fprintln(w)
		}
	}
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
