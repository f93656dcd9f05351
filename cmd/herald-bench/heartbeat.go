package main

import (
	"fmt"
	"sync/atomic"
	"time"
)

// hbSampler measures the heartbeats of a sample of streams during the
// idle phase: from each sampled stream's response head until the run
// starts publishing (after -settle and -hold). A heartbeat is any comment
// line (a line starting with ':'; herald writes ":\n\n"). The stream's own
// reading goroutine records them: no goroutine, timer or allocation per
// heartbeat, two histograms shared by the sample.
type hbSampler struct {
	t0       time.Time
	interval time.Duration // expected (-heartbeat); 0: unknown, nothing judged
	deadline time.Duration // interval + tolerance: a longer wait is late
	closed   atomic.Bool   // the idle phase is over: heartbeats no longer count
	end      time.Duration // when the idle phase ended, since t0 (set before closed)

	first shardedHist // response head to the first heartbeat
	gap   shardedHist // between consecutive heartbeats of one stream
}

// hbTolerance is how much later than the expected interval a heartbeat may
// come before it counts as late: 10 % of the interval, at least 1 s.
func hbTolerance(interval time.Duration) time.Duration {
	return max(time.Second, interval/10)
}

func newHBSampler(t0 time.Time, interval time.Duration) *hbSampler {
	h := &hbSampler{t0: t0, interval: interval}
	if interval > 0 {
		h.deadline = interval + hbTolerance(interval)
	}
	return h
}

// close ends the idle phase.
func (h *hbSampler) close() {
	h.end = time.Since(h.t0)
	h.closed.Store(true)
}

// hbStream is one sampled stream's record, written only by the stream's
// goroutine and read after it ended.
type hbStream struct {
	sampler *hbSampler
	idx     int           // the subscriber's
	opened  time.Duration // response head, since t0
	ended   time.Duration // the stream ended within the idle phase (0: it did not)
	last    time.Duration // the last heartbeat counted
	n       int           // heartbeats counted
	late    int           // of them, after a wait beyond the deadline
}

// beat records a heartbeat received now.
func (s *hbStream) beat() {
	now := time.Since(s.sampler.t0)
	if s.sampler.closed.Load() {
		return
	}
	var wait time.Duration
	if s.n == 0 {
		wait = now - s.opened
		s.sampler.first.record(s.idx, wait)
	} else {
		wait = now - s.last
		s.sampler.gap.record(s.idx, wait)
	}
	if d := s.sampler.deadline; d > 0 && wait > d {
		s.late++
	}
	s.last = now
	s.n++
}

// streamEnded notes that the stream ended (its goroutine, after reading).
func (s *hbStream) streamEnded() {
	if !s.sampler.closed.Load() {
		s.ended = time.Since(s.sampler.t0)
	}
}

// hbResult is the JSON form of the heartbeat sample.
type hbResult struct {
	IntervalMs  float64 `json:"interval_ms"`  // expected (-heartbeat); 0: unknown, late/overdue/missing not judged
	ToleranceMs float64 `json:"tolerance_ms"` // a wait beyond interval + tolerance is late
	Streams     int     `json:"streams"`      // sampled streams that connected
	Seen        uint64  `json:"seen"`         // heartbeats they received in the idle phase
	// How long the sampled streams were watched: response head to the end
	// of the idle phase (or of the stream).
	ObservedMinMs float64     `json:"observed_min_ms"`
	ObservedMaxMs float64     `json:"observed_max_ms"`
	First         percentiles `json:"first"` // response head to the first heartbeat
	Gap           percentiles `json:"gap"`   // between consecutive heartbeats of one stream
	Silent        int         `json:"silent"`
	// With an interval: heartbeats that came after a longer wait than
	// interval + tolerance (since the response head or the previous one);
	// streams still waiting longer than that when the idle phase ended;
	// streams without any heartbeat although watched longer than that
	// (counted in overdue too).
	Late    int `json:"late"`
	Overdue int `json:"overdue"`
	Missing int `json:"missing"`
}

// summarize reads the sampled streams' records (after their goroutines
// ended).
func (h *hbSampler) summarize(streams []*hbStream) *hbResult {
	ms := func(d time.Duration) float64 { return round3(float64(d) / 1e6) }
	res := &hbResult{IntervalMs: ms(h.interval), First: h.first.summary().percentiles(), Gap: h.gap.summary().percentiles()}
	if h.interval > 0 {
		res.ToleranceMs = ms(hbTolerance(h.interval))
	}
	var minObs, maxObs time.Duration
	for _, s := range streams {
		end := h.end
		if s.ended > 0 && s.ended < end {
			end = s.ended
		}
		obs := max(0, end-s.opened)
		if res.Streams == 0 || obs < minObs {
			minObs = obs
		}
		maxObs = max(maxObs, obs)
		res.Streams++
		res.Seen += uint64(s.n)
		res.Late += s.late
		if s.n == 0 {
			res.Silent++
		}
		if h.deadline == 0 {
			continue
		}
		since := s.opened
		if s.n > 0 {
			since = s.last
		}
		if end-since > h.deadline {
			res.Overdue++
			if s.n == 0 {
				res.Missing++
			}
		}
	}
	res.ObservedMinMs, res.ObservedMaxMs = ms(minObs), ms(maxObs)
	return res
}

// lines returns the human-readable lines of the sample.
func (r *hbResult) lines() []string {
	dist := func(p percentiles) string {
		return fmt.Sprintf("p50 %.0f  p99 %.0f  max %.0f ms (n=%d)", p.P50, p.P99, p.Max, p.N)
	}
	judged := "no -heartbeat: not judged"
	if r.IntervalMs > 0 {
		judged = fmt.Sprintf("expected every %v + %v: late %d, overdue %d, missing %d",
			time.Duration(r.IntervalMs*1e6), time.Duration(r.ToleranceMs*1e6), r.Late, r.Overdue, r.Missing)
	}
	return []string{
		fmt.Sprintf("%d seen on %d sampled streams watched %.1f-%.1f s, %d without any; %s",
			r.Seen, r.Streams, r.ObservedMinMs/1e3, r.ObservedMaxMs/1e3, r.Silent, judged),
		fmt.Sprintf("first after connect %s; gap %s", dist(r.First), dist(r.Gap)),
	}
}
