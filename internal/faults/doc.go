// Package faults is herald's fault-injection suite (issue 9): it breaks the
// network between redisbroker brokers and Redis in the ways real networks
// and servers break, and checks that every subscriber still sees each
// topic's log exactly — or an honest reset.
//
// TestFaults (needs Docker; skips without it, fails under CI=true) runs
// seeded random schedules. Each schedule starts three brokers on one Redis
// (append-only file on), each through its own in-process toxiproxy proxies
// (internal/faultproxy): brokers 0 and 1 take their pub/sub connection
// through a proxy of its own, so it can be blackholed alone; broker 2 is
// built from Config.URL, as cmd/server does. Two publishers publish through
// random brokers and one with FCALL herald_publish from a direct client, to
// five topics; four subscribers keep opening sessions on random brokers,
// with cursors built from what they saw before: their own positions, stale
// ones (possibly trimmed since, or of an epoch Redis lost), foreign ones (a
// position of topic X put under topic Y), garbage, subsets, supersets and
// reordered topic lists. The steps (see Kind) are: pub/sub connection
// blackholed (no RST) while new connections pass, every connection
// blackholed, latency, bandwidth limits, connection resets (RST or FIN),
// Redis restarted with and without its data, Redis paused, a broker closed
// and reopened, a topic trimmed. Then every subscriber opens a final
// session, publishing stops, and the final sessions must catch up.
//
// The harness keeps its own Record of every topic's log, read straight from
// Redis (XRANGE herald:{<topic>}:s), including what Redis lost: before Redis
// is emptied, publishing is held and the logs are read to their end; trims
// are recorded before they run. Check then verifies, for every session and
// topic, that its items are segments of "position, then exactly the log
// after it" (contiguous, once, in order, right data), that a reset appears
// only where history after the interrupted position was really lost (epoch
// lost, entries trimmed) or the cursor could not be placed (foreign,
// garbage) — and always in those cases —, that after a reset nothing still
// retained is skipped, that sessions open at the end got everything, that
// while a broker can reach Redis on a new connection events arrive within
// liveBound (a deaf pub/sub connection is a violation), and that every
// acknowledged publish is in the log exactly once and a publish racing Close
// fails with broker.ErrClosed.
//
// TestSentinelFailover and TestSentinelWaitReplicas (sentinel_test.go,
// issue 10) run three brokers on a Sentinel URL against 1 primary, 2
// replicas and 3 sentinels (testredis.StartSentinel), with live
// subscribers and publishers, kill the primary (SIGKILL) or cut it off the
// network, and check every subscriber against the log the new primary
// has: contiguous, once, in order, or a failover reset; they log the time
// until publishing works again and until live delivery resumes. With
// WaitReplicas 1, no acknowledged event may be lost over repeated
// failovers (HERALD_SENTINEL_FAILOVERS, default 4).
//
// Knobs (environment): HERALD_FAULT_SEEDS (comma-separated seeds),
// HERALD_FAULT_SCHEDULES (seeds 1..N), HERALD_FAULT_DURATION (keep cycling
// through the seeds for this long), HERALD_FAULT_KINDS (draw only these
// kinds, e.g. "pubsub-blackhole" to reproduce one fault alone),
// HERALD_FAULT_BUDGET (steps per schedule, as a duration), HERALD_FAULT_LANES
// (schedules in parallel, one Redis each), HERALD_FAULT_LOG=1 (broker
// warnings on stderr). Without knobs TestFaults is a smoke run of two short
// schedules (part of go test ./..., with -race); `make faults` runs 20
// schedules in two lanes without the race detector, `make soak` an hour.
// A failing schedule prints its seed, its steps, a timeline and the command
// that reruns it.
package faults
