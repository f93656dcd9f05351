package server

import (
	"math"
	"sync"
	"time"
)

// maxRateBuckets bounds the rate limiter's memory: beyond it, buckets that
// have refilled completely (idle callers) are dropped, and if that is not
// enough, all of them (every caller starts again with a full burst).
const maxRateBuckets = 100_000

// rateLimiter is a token bucket per key (a credential, or a peer address):
// rate tokens per second, at most burst stored. Safe for concurrent use.
type rateLimiter struct {
	rate  float64 // tokens per second, > 0
	burst float64 // >= 1
	now   func() time.Time

	mu      sync.Mutex // guards buckets
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newRateLimiter(rate float64, burst int) *rateLimiter {
	return &rateLimiter{rate: rate, burst: float64(max(burst, 1)), now: time.Now, buckets: map[string]*bucket{}}
}

// allow takes a token for key. When none is left it returns false and how
// long until one is.
func (l *rateLimiter) allow(key string) (bool, time.Duration) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= maxRateBuckets {
			l.sweep(now)
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	if dt := now.Sub(b.last).Seconds(); dt > 0 {
		b.tokens = math.Min(l.burst, b.tokens+dt*l.rate)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	wait := time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
	return false, wait
}

// sweep drops full buckets (their keys behave the same without one), or
// everything if that frees too little. l.mu is held.
func (l *rateLimiter) sweep(now time.Time) {
	for k, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.buckets, k)
		}
	}
	if len(l.buckets) >= maxRateBuckets*9/10 {
		clear(l.buckets)
	}
}

// retryAfter is the Retry-After value (whole seconds, at least 1) for d.
func retryAfter(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}
