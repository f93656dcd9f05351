package faults

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// Kind is a kind of fault a schedule step injects.
type Kind string

// The fault kinds. Broker-level kinds act on one broker's connections
// through its toxiproxy proxies; Redis-level kinds act on the server.
const (
	// PubSubBlackhole: the broker's open pub/sub connection goes deaf (bytes
	// vanish, no RST) while new connections reach Redis; at the end of
	// the step the deaf connection is closed (the kernel gave up).
	PubSubBlackhole Kind = "pubsub-blackhole"
	// Blackhole: every connection of the broker, open or new, goes deaf;
	// at the end they are closed.
	Blackhole Kind = "blackhole"
	// Latency: a latency spike on the broker's connections.
	Latency Kind = "latency"
	// Bandwidth: a bandwidth limit on the broker's connections.
	Bandwidth Kind = "bandwidth"
	// Reset: the broker's connections are reset (RST on their next bytes,
	// or closed with a FIN).
	Reset Kind = "reset"
	// RestartKeep: Redis restarts with its data (append-only file).
	RestartKeep Kind = "restart-keep"
	// RestartEmpty: Redis restarts without its data (every stream, epoch
	// and the function library lost).
	RestartEmpty Kind = "restart-empty"
	// Pause: the Redis process is frozen (docker pause).
	Pause Kind = "pause"
	// CloseReopen: a broker is closed and, after the step, a new one is
	// opened in its place.
	CloseReopen Kind = "close-reopen"
	// Trim: a topic's oldest entries are trimmed (XTRIM MINID), so stale
	// cursors fall before the retained history.
	Trim Kind = "trim"
	// Quiet: no fault; every event must arrive promptly.
	Quiet Kind = "quiet"
)

// AllKinds lists every fault kind.
var AllKinds = []Kind{PubSubBlackhole, Blackhole, Latency, Bandwidth, Reset, RestartKeep, RestartEmpty, Pause, CloseReopen, Trim, Quiet}

// ParseKinds parses a comma-separated list of kinds ("" means all).
func ParseKinds(s string) ([]Kind, error) {
	if strings.TrimSpace(s) == "" {
		return AllKinds, nil
	}
	var ks []Kind
	for _, f := range strings.Split(s, ",") {
		k := Kind(strings.TrimSpace(f))
		if !slices.Contains(AllKinds, k) {
			return nil, fmt.Errorf("unknown fault kind %q (known: %v)", k, AllKinds)
		}
		ks = append(ks, k)
	}
	return ks, nil
}

// Step is one fault of a schedule.
type Step struct {
	Kind   Kind
	Broker int           // the broker it acts on (broker-level kinds and CloseReopen)
	Topic  int           // Trim: the topic
	Dur    time.Duration // how long the fault lasts before it is healed
	// Latency: latency and jitter in ms; Bandwidth: rate in KB/s.
	Latency, Jitter, Rate int
	RST                   bool    // Reset: RST (reset_peer) rather than FIN
	Keep                  float64 // Trim: fraction of the entries kept
}

func (s Step) String() string {
	switch s.Kind {
	case PubSubBlackhole, Blackhole, CloseReopen:
		return fmt.Sprintf("%s(b%d, %v)", s.Kind, s.Broker, s.Dur)
	case Latency:
		return fmt.Sprintf("%s(b%d, %dms±%d, %v)", s.Kind, s.Broker, s.Latency, s.Jitter, s.Dur)
	case Bandwidth:
		return fmt.Sprintf("%s(b%d, %dKB/s, %v)", s.Kind, s.Broker, s.Rate, s.Dur)
	case Reset:
		how := "fin"
		if s.RST {
			how = "rst"
		}
		return fmt.Sprintf("%s(b%d, %s, %v)", s.Kind, s.Broker, how, s.Dur)
	case Trim:
		return fmt.Sprintf("%s(t%d, keep %.0f%%)", s.Kind, s.Topic, 100*s.Keep)
	}
	return fmt.Sprintf("%s(%v)", s.Kind, s.Dur)
}

// Shape is what every schedule of a run has in common.
type Shape struct {
	Brokers int
	// PubSubBrokers are the brokers whose pub/sub connection has its own
	// proxy (PubSubBlackhole acts on them only).
	PubSubBrokers []int
	Topics        int
	Kinds         []Kind
	// Budget is the total duration of a schedule's steps, roughly.
	Budget time.Duration
	// LiveBound: how long a PubSubBlackhole must last beyond the bound
	// for the liveness check to see anything.
	LiveBound time.Duration
}

// Schedule is a seeded random sequence of faults.
type Schedule struct {
	Seed  uint64
	Steps []Step
}

func (s Schedule) String() string {
	parts := make([]string, len(s.Steps))
	for i, st := range s.Steps {
		parts[i] = st.String()
	}
	return fmt.Sprintf("seed %d: %s", s.Seed, strings.Join(parts, ", "))
}

// NewSchedule returns the schedule of seed: the same seed and shape give
// the same schedule.
func NewSchedule(seed uint64, sh Shape) Schedule {
	rng := rand.New(rand.NewPCG(seed, 0x6865726c64))
	kinds := slices.Clone(sh.Kinds)
	if len(sh.PubSubBrokers) == 0 {
		kinds = slices.DeleteFunc(kinds, func(k Kind) bool { return k == PubSubBlackhole })
	}
	if len(kinds) == 0 {
		kinds = []Kind{Quiet}
	}
	ms := func(lo, hi int) time.Duration { return time.Duration(lo+rng.IntN(hi-lo+1)) * time.Millisecond }
	s := Schedule{Seed: seed}
	var total time.Duration
	for total < sh.Budget || len(s.Steps) == 0 {
		st := Step{Kind: kinds[rng.IntN(len(kinds))], Broker: rng.IntN(sh.Brokers)}
		switch st.Kind {
		case PubSubBlackhole:
			st.Broker = sh.PubSubBrokers[rng.IntN(len(sh.PubSubBrokers))]
			st.Dur = sh.LiveBound + ms(1500, 2500)
		case Blackhole:
			st.Dur = ms(800, 3000)
		case Latency:
			st.Latency, st.Jitter = 50+rng.IntN(900), rng.IntN(100)
			st.Dur = ms(1000, 3000)
		case Bandwidth:
			st.Rate = 2 + rng.IntN(60)
			st.Dur = ms(1000, 3000)
		case Reset:
			st.RST = rng.IntN(2) == 0
			st.Dur = ms(100, 600)
		case RestartKeep, RestartEmpty:
			st.Dur = ms(0, 500)
		case Pause:
			st.Dur = ms(500, 2500)
		case CloseReopen:
			st.Dur = ms(100, 1500)
		case Trim:
			st.Topic = rng.IntN(sh.Topics)
			st.Keep = 0.2 + 0.6*rng.Float64()
			st.Dur = ms(200, 800)
		case Quiet:
			st.Dur = ms(500, 2000)
		}
		s.Steps = append(s.Steps, st)
		total += st.Dur
	}
	return s
}
