#!/usr/bin/env bash
# bench.sh runs herald's scenario set S1-S8 against refserver (the
# plain net/http ceiling), herald with the in-memory broker and herald with
# Redis, back to back on this machine, and prints a ratio table
# (herald / refserver) per scenario.
#
# Usage: scripts/bench.sh            # full set, about 10 minutes
#        QUICK=1 scripts/bench.sh    # smoke version, about 1 minute
#
# Environment:
#   REFSERVER_DIR  refserver sources (default: ../shared/tools/refserver from the repo root)
#   OUT            output directory (default: a new directory under ${TMPDIR:-/tmp})
#   SCENARIOS      subset to run, e.g. "S1 S3" (default: S1 S2 S3 S4 S5 S6 S7 S8)
#                  S1-S5: issue 6 (one sequential publisher, fan-out, scale, idle, burst)
#                  S6: 8 concurrent HTTP publishers as fast as they go, 1 subscriber
#                      of their 8 topics (publish path under concurrency)
#                  S7: S6 with batches of 100 events per request, one subscriber per
#                      topic (no refserver: it cannot batch; compare with S6 of the
#                      same target)
#                  S8: S6 with an idempotency key on every event (compare with S6)
#   TARGETS        subset of "refserver herald-mem herald-redis herald-redis-unix herald-redis-fcall" (default: all)
#                  herald-redis-unix is herald+Redis over the Redis Unix socket
#                  herald-redis-fcall is herald+Redis with events published by
#                  FCALL herald_publish straight into Redis instead of POST /publish
#   FCALL_SCENARIOS  scenarios that run herald-redis-fcall (default: S1 S2 S6 S7 S8)
#   REPEAT         rounds of the whole set, reduced to the median (default 2; QUICK: 1);
#                  even rounds run the targets in reverse order, so that a drift
#                  in the machine's load does not always favour the same one
#   SERVER_CPUS    taskset CPU list for the servers and redis-server (default 0)
#   LOAD_CPUS      taskset CPU list for the load tool (default 1)
#   S4_CONNS       connections of the idle-scale scenario (default: hard RLIMIT_NOFILE - 1000)
#   REDIS_SERVER   redis-server binary (default: from PATH; Debian package redis-server)
#   HERALD_REV     build herald and herald-bench from this git revision (git archive into
#                  $OUT/src) instead of the working tree, e.g. HERALD_REV=HEAD
#
# Each run starts a fresh server process pinned to SERVER_CPUS; herald-bench
# runs pinned to LOAD_CPUS. redis-server (started here on a random loopback
# port, no persistence) shares SERVER_CPUS with herald: the server side gets
# one core in total. Raw summaries go to $OUT/results.jsonl, each run's
# human-readable output to $OUT/<scenario>-<target>-<n>.txt, server logs
# next to them.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

QUICK="${QUICK:-0}"
REFSERVER_DIR="${REFSERVER_DIR:-$root/../shared/tools/refserver}"
OUT="${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/herald-bench.XXXXXX")}"
SCENARIOS="${SCENARIOS:-S1 S2 S3 S4 S5 S6 S7 S8}"
TARGETS="${TARGETS:-refserver herald-mem herald-redis herald-redis-unix herald-redis-fcall}"
FCALL_SCENARIOS="${FCALL_SCENARIOS:-S1 S2 S6 S7 S8}"
if [ "$QUICK" = 1 ]; then REPEAT="${REPEAT:-1}"; else REPEAT="${REPEAT:-2}"; fi
SERVER_CPUS="${SERVER_CPUS:-0}"
LOAD_CPUS="${LOAD_CPUS:-1}"
REDIS_SERVER="${REDIS_SERVER:-redis-server}"
GO="${GO:-go}"

mkdir -p "$OUT/bin"
results="$OUT/results.jsonl"
: >"$results"

log() { printf 'bench: %s\n' "$*" >&2; }

# --- tools -------------------------------------------------------------------
if [ ! -f "$REFSERVER_DIR/main.go" ]; then
	log "refserver not found in $REFSERVER_DIR (set REFSERVER_DIR)"
	exit 2
fi
log "building refserver, herald and herald-bench into $OUT/bin"
(cd "$REFSERVER_DIR" && CGO_ENABLED=0 "$GO" build -o "$OUT/bin/refserver" .)
src="$root"
if [ -n "${HERALD_REV:-}" ]; then
	src="$OUT/src"
	mkdir -p "$src"
	git -C "$root" archive "$HERALD_REV" | tar -x -C "$src"
	log "herald from $(git -C "$root" rev-parse --short "$HERALD_REV")"
fi
(cd "$src" && CGO_ENABLED=0 "$GO" build -o "$OUT/bin/herald" ./cmd/server)
(cd "$src" && CGO_ENABLED=0 "$GO" build -o "$OUT/bin/herald-bench" ./cmd/herald-bench)

pin() { # pin <cpus> cmd...: taskset when available and the machine has >1 CPU
	local cpus="$1"
	shift
	if command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -gt 1 ] && [ -n "$cpus" ]; then
		taskset -c "$cpus" "$@"
	else
		"$@"
	fi
}

# pin_bg <cpus> cmd... &: the same for a background process; exec keeps the
# PID ($!) the server's own, so that -pid reads the server's memory.
pin_bg() {
	local cpus="$1"
	shift
	if command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -gt 1 ] && [ -n "$cpus" ]; then
		exec taskset -c "$cpus" "$@"
	else
		exec "$@"
	fi
}

hard_nofile="$(ulimit -Hn)"
[ "$hard_nofile" = unlimited ] && hard_nofile=1048576
ulimit -n "$hard_nofile" 2>/dev/null || true

# --- redis ---------------------------------------------------------------------
redis_pid=""
redis_port=""
server_pid=""
cleanup() {
	if [ -n "$server_pid" ]; then kill -KILL "$server_pid" 2>/dev/null || true; fi
	if [ -n "$redis_pid" ]; then kill -TERM "$redis_pid" 2>/dev/null || true; fi
}
trap cleanup EXIT

start_redis() {
	if ! command -v "$REDIS_SERVER" >/dev/null 2>&1; then
		log "redis-server not found (Debian: apt-get install redis-server); skipping herald-redis"
		return 1
	fi
	for _ in 1 2 3 4 5 6 7 8; do
		redis_port=$((20000 + RANDOM % 30000))
		pin_bg "$SERVER_CPUS" "$REDIS_SERVER" --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no \
			--unixsocket "$OUT/redis.sock" --unixsocketperm 700 \
			--daemonize no --protected-mode yes --loglevel warning --maxclients 1000 \
			>"$OUT/redis.log" 2>&1 &
		redis_pid=$!
		for _ in $(seq 50); do
			if redis-cli -p "$redis_port" ping >/dev/null 2>&1; then
				log "redis-server $($REDIS_SERVER --version | awk '{print $3}') on 127.0.0.1:$redis_port (pid $redis_pid)"
				return 0
			fi
			kill -0 "$redis_pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$redis_pid" 2>/dev/null || true
		wait "$redis_pid" 2>/dev/null || true
		redis_pid=""
	done
	log "could not start redis-server"
	return 1
}

# --- servers -------------------------------------------------------------------
# start_server <target> <logfile>: sets server_pid and server_url.
start_server() {
	local target="$1" logf="$2" addr=""
	case "$target" in
	refserver)
		pin_bg "$SERVER_CPUS" "$OUT/bin/refserver" -addr 127.0.0.1:0 -heartbeat 30s >"$logf" 2>&1 &
		;;
	herald-mem)
		pin_bg "$SERVER_CPUS" "$OUT/bin/herald" --addr 127.0.0.1:0 --heartbeat 30s \
			--drain-delay 0s --drain-timeout 2s >"$logf" 2>&1 &
		;;
	herald-redis | herald-redis-fcall)
		redis-cli -p "$redis_port" flushall >/dev/null
		pin_bg "$SERVER_CPUS" "$OUT/bin/herald" --addr 127.0.0.1:0 --heartbeat 30s \
			--drain-delay 0s --drain-timeout 2s --redis-url "redis://127.0.0.1:$redis_port/0" >"$logf" 2>&1 &
		;;
	herald-redis-unix)
		# The same Redis through its Unix socket: no TCP round trip per
		# publish (on a VM's loopback that round trip dominates S1).
		redis-cli -p "$redis_port" flushall >/dev/null
		pin_bg "$SERVER_CPUS" "$OUT/bin/herald" --addr 127.0.0.1:0 --heartbeat 30s \
			--drain-delay 0s --drain-timeout 2s --redis-url "unix://$OUT/redis.sock" >"$logf" 2>&1 &
		;;
	*)
		log "unknown target $target"
		return 1
		;;
	esac
	server_pid=$!
	for _ in $(seq 100); do
		# refserver: "listening on 127.0.0.1:N"; herald: "addr=127.0.0.1:N"
		addr="$(grep -oE '(listening on |addr=)127\.0\.0\.1:[0-9]+' "$logf" 2>/dev/null | head -n1 | grep -oE '127\.0\.0\.1:[0-9]+' || true)"
		[ -n "$addr" ] && break
		kill -0 "$server_pid" 2>/dev/null || break
		sleep 0.1
	done
	if [ -z "$addr" ]; then
		log "$target did not start; its log:"
		cat "$logf" >&2
		return 1
	fi
	server_url="http://$addr"
}

stop_server() {
	[ -n "$server_pid" ] || return 0
	kill -TERM "$server_pid" 2>/dev/null || true
	for _ in $(seq 30); do
		kill -0 "$server_pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$server_pid" 2>/dev/null || true
	wait "$server_pid" 2>/dev/null || true
	server_pid=""
}

# --- scenarios -----------------------------------------------------------------
s4_conns="${S4_CONNS:-$((hard_nofile - 1000))}"
if [ "$QUICK" = 1 ]; then
	S1="-subs 1 -events 2000"
	S2="-subs 200 -events 200 -rate 200"
	S3="-subs 1000 -events 20 -rate 20"
	S4="-subs $((s4_conns < 2000 ? s4_conns : 2000)) -hold 1s"
	S5="-subs 200 -duration 2s"
	S6="-subs 1 -topics 8 -sub-topics 8 -publishers 8 -duration 3s"
	S7="-subs 8 -topics 8 -publishers 8 -duration 3s -batch 100"
else
	# The sizes of issue 6.
	S1="-subs 1 -events 20000"
	S2="-subs 1000 -events 1000 -rate 200"
	S3="-subs 10000 -events 100 -rate 20 -source-ips 4"
	S4="-subs $s4_conns -hold 35s -settle 3s -source-ips 4"
	S5="-subs 1000 -duration 10s"
	S6="-subs 1 -topics 8 -sub-topics 8 -publishers 8 -duration 10s"
	S7="-subs 8 -topics 8 -publishers 8 -duration 10s -batch 100"
fi
# S7: one subscriber per topic (one stream taking 8 batches of 100 at once
# is dropped as a slow consumer past --queue-limit on one CPU).
S8="$S6 -idempotent"

scenario_args() {
	case "$1" in
	S1) echo "$S1" ;; S2) echo "$S2" ;; S3) echo "$S3" ;; S4) echo "$S4" ;; S5) echo "$S5" ;;
	S6) echo "$S6" ;; S7) echo "$S7" ;; S8) echo "$S8" ;;
	*) log "unknown scenario $1"; return 1 ;;
	esac
}

case " $TARGETS " in
*" herald-redis"*) start_redis || TARGETS="$(echo "$TARGETS" | sed 's/herald-redis[a-z-]*//g')" ;;
esac

{
	echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "nproc: $(nproc)"
	echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
	echo "go: $("$GO" version)"
	echo "herald: ${HERALD_REV:-working tree} ($(git -C "$root" rev-parse --short "${HERALD_REV:-HEAD}" 2>/dev/null || echo unknown))"
	echo "kernel: $(uname -r)"
	echo "nofile (hard): $hard_nofile"
	echo "quick: $QUICK; scenarios: $SCENARIOS; targets: $TARGETS; repeat: $REPEAT"
	echo "server cpus: $SERVER_CPUS; load cpus: $LOAD_CPUS"
} | tee "$OUT/machine.txt" >&2

started=$SECONDS
for n in $(seq "$REPEAT"); do
	for sc in $SCENARIOS; do
		args="$(scenario_args "$sc")"
		order="$TARGETS"
		if [ $((n % 2)) = 0 ]; then order="$(echo "$TARGETS" | tr ' ' '\n' | grep . | tac | tr '\n' ' ')"; fi
		for target in $order; do
			extra=""
			# refserver publishes one event per request, without keys.
			if [ "$target" = refserver ] && { [ "$sc" = S7 ] || [ "$sc" = S8 ]; }; then continue; fi
			if [ "$target" = herald-redis-fcall ]; then
				case " $FCALL_SCENARIOS " in *" $sc "*) ;; *) continue ;; esac
				extra="-publish redis -redis-url redis://127.0.0.1:$redis_port/0"
			fi
			logf="$OUT/$sc-$target-$n.server.log"
			start_server "$target" "$logf" || continue
			log "$sc $target (run $n): herald-bench $args"
			# shellcheck disable=SC2086 # args are word lists on purpose
			if ! pin "$LOAD_CPUS" "$OUT/bin/herald-bench" -url "$server_url" -pid "$server_pid" \
				-scenario "$sc" -target "$target" -timeout 3m $args $extra >"$OUT/$sc-$target-$n.txt" 2>&1; then
				log "$sc $target: herald-bench failed, see $OUT/$sc-$target-$n.txt"
			fi
			tail -n1 "$OUT/$sc-$target-$n.txt" | grep '^{' >>"$results" || true
			grep -E '^(delivered|latency|completeness|server memory|held|error)' "$OUT/$sc-$target-$n.txt" | sed 's/^/    /' >&2 || true
			stop_server
		done
	done
done
log "done in $((SECONDS - started)) s; summaries in $results"
echo
"$OUT/bin/herald-bench" -compare "$results" -baseline refserver | tee "$OUT/table.md"
