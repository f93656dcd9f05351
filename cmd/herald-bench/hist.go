package main

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// histogram is a log-linear histogram of durations in nanoseconds: 32
// sub-buckets per power of two, so a reported value is within about 3% of
// the true one. It is safe for concurrent use (atomic counters); shard it
// when many goroutines record at once.
type histogram struct {
	counts [histBuckets]atomic.Uint64
	max    atomic.Int64
}

const (
	histSubBits = 5
	histSub     = 1 << histSubBits
	histBuckets = 64 * histSub
)

// bucketOf returns the bucket of v (v >= 0).
func bucketOf(v uint64) int {
	if v < histSub {
		return int(v)
	}
	e := bits.Len64(v) - histSubBits - 1 // v>>e is in [32, 64)
	return (e+1)<<histSubBits + int(v>>uint(e)-histSub)
}

// bucketRange returns the smallest value of bucket i and the bucket's width.
func bucketRange(i int) (lo, width uint64) {
	if i < histSub {
		return uint64(i), 1
	}
	e := uint(i>>histSubBits - 1)
	m := uint64(i & (histSub - 1))
	return (histSub + m) << e, 1 << e
}

func (h *histogram) record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.counts[bucketOf(uint64(d))].Add(1)
	for {
		m := h.max.Load()
		if int64(d) <= m || h.max.CompareAndSwap(m, int64(d)) {
			return
		}
	}
}

// shardedHist spreads recording over several histograms so that
// goroutines on different cores do not fight over the same cache lines.
type shardedHist struct {
	shards [8]histogram
}

func (s *shardedHist) record(shard int, d time.Duration) {
	s.shards[shard&7].record(d)
}

// summary is a merged snapshot of a histogram.
type summary struct {
	counts [histBuckets]uint64
	n      uint64
	max    time.Duration
}

func (s *shardedHist) summary() *summary {
	var out summary
	for i := range s.shards {
		h := &s.shards[i]
		for b := range h.counts {
			c := h.counts[b].Load()
			out.counts[b] += c
			out.n += c
		}
		if m := time.Duration(h.max.Load()); m > out.max {
			out.max = m
		}
	}
	return &out
}

// quantile returns the value at quantile q (0..1): the middle of the bucket
// holding the q-th sample, never above the recorded maximum. Zero when
// nothing was recorded.
func (s *summary) quantile(q float64) time.Duration {
	if s.n == 0 {
		return 0
	}
	rank := uint64(q*float64(s.n) + 0.5)
	if rank < 1 {
		rank = 1
	}
	if rank > s.n {
		rank = s.n
	}
	var cum uint64
	for i, c := range s.counts {
		cum += c
		if cum >= rank {
			lo, w := bucketRange(i)
			v := time.Duration(lo + w/2)
			if v > s.max {
				v = s.max
			}
			return v
		}
	}
	return s.max
}

// percentiles is the JSON form of a distribution, in milliseconds.
type percentiles struct {
	N   uint64  `json:"n"`
	P50 float64 `json:"p50_ms"`
	P90 float64 `json:"p90_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
}

func (s *summary) percentiles() percentiles {
	ms := func(d time.Duration) float64 { return round3(float64(d) / 1e6) }
	return percentiles{N: s.n, P50: ms(s.quantile(0.50)), P90: ms(s.quantile(0.90)), P99: ms(s.quantile(0.99)), Max: ms(s.max)}
}

func round3(f float64) float64 {
	if f < 0 {
		return -float64(int64(-f*1000+0.5)) / 1000
	}
	return float64(int64(f*1000+0.5)) / 1000
}
