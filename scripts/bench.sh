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
#   REFSERVER_DIR  refserver sources (default: ../shared/tools/refserver from the repo root;
#                  needed only when TARGETS has refserver)
#   OUT            output directory (default: a new directory under ${TMPDIR:-/tmp})
#   SCENARIOS      subset to run, e.g. "S1 S3" (default: S1 S2 S3 S4 S5 S6 S7 S8)
#                  S1-S5: issue 6 (one sequential publisher, fan-out, scale, idle, burst)
#                  S6: 8 concurrent HTTP publishers as fast as they go, 1 subscriber
#                      of their 8 topics (publish path under concurrency)
#                  S7: S6 with batches of 100 events per request, one subscriber per
#                      topic (no refserver: it cannot batch; compare with S6 of the
#                      same target)
#                  S8: S6 with an idempotency key on every event (compare with S6)
#   TARGETS        subset of "refserver herald-mem herald-redis herald-redis-unix herald-redis-fcall
#                  herald-redis-cluster" (default: all)
#                  herald-redis-unix is herald+Redis over the Redis Unix socket
#                  herald-redis-cluster is herald (--redis-cluster) on a Redis Cluster of
#                  3 primaries without replicas started here (redis-cli --cluster create)
#                  herald-redis-fcall is herald+Redis with events published by
#                  FCALL herald_publish straight into Redis instead of POST /publish
#   EXTRA_ARGS     herald-bench flags added to every scenario's (the last one wins), e.g.
#                  EXTRA_ARGS="-topics 12" to spread S5 over the shards of herald-redis-cluster
#   FCALL_SCENARIOS  scenarios that run herald-redis-fcall (default: S1 S2 S6 S7 S8)
#   BASELINE       the target the table's ratios divide by (default: refserver, or the
#                  first of TARGETS without it)
#   REPEAT         rounds of the whole set, reduced to the median (default 2; QUICK: 1);
#                  even rounds run the targets in reverse order, so that a drift
#                  in the machine's load does not always favour the same one
#   SERVER_CPUS    taskset CPU list for the servers and redis-server (default 0)
#   LOAD_CPUS      taskset CPU list for the load tool (default 1)
#   S4_CONNS       connections of the idle-scale scenario (default: hard RLIMIT_NOFILE - 1000);
#                  S4 also times the heartbeats of 200 sampled streams (herald-bench
#                  -hb-sample) and, for herald, judges them against its 30 s interval
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
#
# Per run the script also reads the CPU time (utime+stime, /proc/<pid>/stat)
# of the server and of its redis-server processes before and after
# herald-bench, and adds it to the summary (proc_server_cpu_s,
# proc_redis_cpu_s: the table shows it per event and per delivery). For the
# Redis targets it keeps, per run, the INFO commandstats deltas of every
# node ($OUT/<scenario>-<target>-<n>.commands.txt, summed over the nodes and
# divided by events published) and the CLIENT LIST of every node taken while
# the most pub/sub subscriptions were open (.clients.txt).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

QUICK="${QUICK:-0}"
REFSERVER_DIR="${REFSERVER_DIR:-$root/../shared/tools/refserver}"
OUT="${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/herald-bench.XXXXXX")}"
SCENARIOS="${SCENARIOS:-S1 S2 S3 S4 S5 S6 S7 S8}"
TARGETS="${TARGETS:-refserver herald-mem herald-redis herald-redis-unix herald-redis-fcall herald-redis-cluster}"
FCALL_SCENARIOS="${FCALL_SCENARIOS:-S1 S2 S6 S7 S8}"
if [ "$QUICK" = 1 ]; then REPEAT="${REPEAT:-1}"; else REPEAT="${REPEAT:-2}"; fi
SERVER_CPUS="${SERVER_CPUS:-0}"
LOAD_CPUS="${LOAD_CPUS:-1}"
REDIS_SERVER="${REDIS_SERVER:-redis-server}"
GO="${GO:-go}"
case " $TARGETS " in
*" refserver "*) BASELINE="${BASELINE:-refserver}" ;;
*) BASELINE="${BASELINE:-$(echo "$TARGETS" | awk '{print $1}')}" ;;
esac
CLK_TCK="$(getconf CLK_TCK)"

mkdir -p "$OUT/bin"
results="$OUT/results.jsonl"
: >"$results"

log() { printf 'bench: %s\n' "$*" >&2; }

# --- tools -------------------------------------------------------------------
case " $TARGETS " in
*" refserver "*)
	if [ ! -f "$REFSERVER_DIR/main.go" ]; then
		log "refserver not found in $REFSERVER_DIR (set REFSERVER_DIR)"
		exit 2
	fi
	log "building refserver into $OUT/bin"
	(cd "$REFSERVER_DIR" && CGO_ENABLED=0 "$GO" build -o "$OUT/bin/refserver" .)
	;;
esac
log "building herald and herald-bench into $OUT/bin"
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
census_pid=""
cluster_pids=()
cluster_ports=()
cluster_url=""
cleanup() {
	if [ -n "$census_pid" ]; then kill -TERM "$census_pid" 2>/dev/null || true; fi
	if [ -n "$server_pid" ]; then kill -KILL "$server_pid" 2>/dev/null || true; fi
	if [ -n "$redis_pid" ]; then kill -TERM "$redis_pid" 2>/dev/null || true; fi
	local p
	for p in "${cluster_pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
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

# start_redis_cluster: three redis-server processes with --cluster-enabled
# on random loopback ports, pinned like the standalone one, formed into a
# cluster of 3 primaries and no replicas: on this machine a replica would
# only add its replication work to the server side's one core, which the
# standalone target does not pay, and no scenario fails a node. Sets
# cluster_pids, cluster_ports and cluster_url.
start_redis_cluster() {
	if ! command -v "$REDIS_SERVER" >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
		log "redis-server or redis-cli not found (Debian: apt-get install redis-server); skipping herald-redis-cluster"
		return 1
	fi
	local i port pid d ok
	for i in 1 2 3; do
		ok=0
		for _ in 1 2 3 4 5 6 7 8; do
			# The cluster bus listens on port + 10000.
			port=$((20000 + RANDOM % 30000))
			case " ${cluster_ports[*]} $redis_port " in *" $port "*) continue ;; esac
			d="$OUT/cluster-$port"
			mkdir -p "$d"
			pin_bg "$SERVER_CPUS" "$REDIS_SERVER" --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
				--cluster-enabled yes --cluster-config-file "$d/nodes.conf" --dir "$d" \
				--daemonize no --protected-mode yes --loglevel warning --maxclients 1000 \
				>"$d/redis.log" 2>&1 &
			pid=$!
			for _ in $(seq 50); do
				if redis-cli -p "$port" ping >/dev/null 2>&1; then ok=1; break; fi
				kill -0 "$pid" 2>/dev/null || break
				sleep 0.1
			done
			if [ "$ok" = 1 ]; then
				cluster_pids+=("$pid")
				cluster_ports+=("$port")
				break
			fi
			kill -KILL "$pid" 2>/dev/null || true
			wait "$pid" 2>/dev/null || true
		done
		if [ "$ok" != 1 ]; then
			log "could not start cluster node $i"
			return 1
		fi
	done
	if ! redis-cli --cluster create "127.0.0.1:${cluster_ports[0]}" "127.0.0.1:${cluster_ports[1]}" \
		"127.0.0.1:${cluster_ports[2]}" --cluster-replicas 0 --cluster-yes >"$OUT/cluster-create.log" 2>&1; then
		log "redis-cli --cluster create failed:"
		cat "$OUT/cluster-create.log" >&2
		return 1
	fi
	# Every node must see all slots served and both other nodes before
	# herald reads the slot map.
	for _ in $(seq 100); do
		ok=1
		for port in "${cluster_ports[@]}"; do
			d="$(redis-cli -p "$port" cluster info 2>/dev/null | tr -d '\r')"
			case "$d" in *cluster_state:ok*) ;; *) ok=0 ;; esac
			case "$d" in *cluster_known_nodes:3*) ;; *) ok=0 ;; esac
		done
		[ "$ok" = 1 ] && break
		sleep 0.1
	done
	if [ "$ok" != 1 ]; then
		log "the cluster did not reach cluster_state:ok"
		return 1
	fi
	cluster_url="redis://127.0.0.1:${cluster_ports[0]}?addr=127.0.0.1:${cluster_ports[1]}&addr=127.0.0.1:${cluster_ports[2]}"
	log "redis cluster: 3 primaries, no replicas, on 127.0.0.1:${cluster_ports[*]} (pids ${cluster_pids[*]})"
}

# redis_ports_of / redis_pids_of <target>: the Redis nodes behind a target.
redis_ports_of() {
	case "$1" in
	herald-redis | herald-redis-unix | herald-redis-fcall) echo "$redis_port" ;;
	herald-redis-cluster) echo "${cluster_ports[*]}" ;;
	esac
}
redis_pids_of() {
	case "$1" in
	herald-redis | herald-redis-unix | herald-redis-fcall) echo "$redis_pid" ;;
	herald-redis-cluster) echo "${cluster_pids[*]}" ;;
	esac
}

# cpu_ticks <pid>...: utime+stime of the processes, in clock ticks.
cpu_ticks() {
	local p t=0 v
	for p in "$@"; do
		# Fields after "pid (comm) ": utime and stime are the 12th and 13th.
		v="$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}')"
		t=$((t + ${v:-0}))
	done
	echo "$t"
}

# commandstats <prefix> <port>...: INFO commandstats of every node into
# <prefix>.<port>.
commandstats() {
	local prefix="$1" p
	shift
	for p in "$@"; do
		redis-cli -p "$p" info commandstats 2>/dev/null | tr -d '\r' >"$prefix.$p" || true
		redis-cli -p "$p" cluster info 2>/dev/null | tr -d '\r' | grep '^cluster_stats_messages' >>"$prefix.$p" || true
	done
}

# commands_report <before> <after> <published> <port>...: the calls (and
# Redis's usec) of each command between the two snapshots, per node and
# summed, and per published event; cluster-bus messages sent.
commands_report() {
	local before="$1" after="$2" published="$3" p
	shift 3
	for p in "$@"; do
		awk -v node="$p" -F'[:,=]' '
			FNR == NR && /^cmdstat_/ { bc[$1] = $3; bu[$1] = $5; next }
			FNR == NR && /^cluster_stats_messages/ { bm[$1] = $2; next }
			/^cmdstat_/ { c = $3 - bc[$1]; u = $5 - bu[$1]; if (c > 0) print "cmd", node, substr($1, 9), c, u }
			/^cluster_stats_messages/ { m = $2 - bm[$1]; if (m > 0) print "bus", node, $1, m, 0 }
		' "$before.$p" "$after.$p"
	done | awk -v pub="$published" '
		{ print; if ($1 == "cmd") { calls[$3] += $4; usec[$3] += $5 } else { bus[$3] += $4 } }
		END {
			for (c in calls) printf "total %s calls=%d per_event=%.3f usec_per_event=%.2f\n", c, calls[c], pub ? calls[c] / pub : 0, pub ? usec[c] / pub : 0
			for (m in bus) printf "bus %s %d per_event=%.3f\n", m, bus[m], pub ? bus[m] / pub : 0
		}'
}

# census_start <file> <port>...: CLIENT LIST of every node once a second
# (pinned with the load tool) until census_stop; <file> keeps the sample
# with the most connections in pub/sub mode.
census_start() {
	local file="$1"
	shift
	: >"$file"
	(
		best=-1
		while :; do
			for p in "$@"; do
				redis-cli -p "$p" client list 2>/dev/null | tr -d '\r' | grep -v 'cmd=client|list' | sed "s/^/node=$p /" || true
			done >"$file.tmp"
			n="$(grep -cE ' flags=[A-Za-z]*P' "$file.tmp" || true)"
			if [ "${n:-0}" -ge "$best" ]; then best="${n:-0}"; cp "$file.tmp" "$file"; fi
			sleep 1
		done
	) &
	census_pid=$!
}
census_stop() {
	[ -n "$census_pid" ] || return 0
	kill -TERM "$census_pid" 2>/dev/null || true
	wait "$census_pid" 2>/dev/null || true
	census_pid=""
}

# census_report <file>: per node, herald's connections, those in pub/sub
# mode and their channel / shard-channel subscriptions.
census_report() {
	awk '{
		node = ""; flags = ""; sub_ = 0; ssub = 0
		for (i = 1; i <= NF; i++) {
			split($i, kv, "=")
			if (kv[1] == "node") node = kv[2]
			else if (kv[1] == "flags") flags = kv[2]
			else if (kv[1] == "sub") sub_ = kv[2]
			else if (kv[1] == "ssub") ssub = kv[2]
		}
		conns[node]++
		if (flags ~ /P/) { ps[node]++; subs[node] += sub_; ssubs[node] += ssub }
	}
	END { for (n in conns) printf "node %s: %d connections, %d in pub/sub (sub=%d ssub=%d)\n", n, conns[n], ps[n], subs[n], ssubs[n] }' "$1" | sort
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
	herald-redis-cluster)
		local p
		for p in "${cluster_ports[@]}"; do redis-cli -p "$p" flushall >/dev/null; done
		pin_bg "$SERVER_CPUS" "$OUT/bin/herald" --addr 127.0.0.1:0 --heartbeat 30s \
			--drain-delay 0s --drain-timeout 2s --redis-url "$cluster_url" --redis-cluster >"$logf" 2>&1 &
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
*" herald-redis "* | *" herald-redis-unix "* | *" herald-redis-fcall "*)
	start_redis || TARGETS="$(echo "$TARGETS" | tr ' ' '\n' | grep -vxE 'herald-redis(-unix|-fcall)?' | tr '\n' ' ')" ;;
esac
case " $TARGETS " in
*" herald-redis-cluster "*) start_redis_cluster || TARGETS="$(echo "$TARGETS" | tr ' ' '\n' | grep -vx herald-redis-cluster | tr '\n' ' ')" ;;
esac

{
	echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "nproc: $(nproc)"
	echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
	echo "go: $("$GO" version)"
	echo "herald: ${HERALD_REV:-working tree} ($(git -C "$root" rev-parse --short "${HERALD_REV:-HEAD}" 2>/dev/null || echo unknown))"
	echo "kernel: $(uname -r)"
	echo "nofile (hard): $hard_nofile"
	echo "quick: $QUICK; scenarios: $SCENARIOS; targets: $TARGETS; repeat: $REPEAT${EXTRA_ARGS:+; extra args: $EXTRA_ARGS}"
	echo "server cpus: $SERVER_CPUS; load cpus: $LOAD_CPUS"
} | tee "$OUT/machine.txt" >&2

started=$SECONDS
for n in $(seq "$REPEAT"); do
	for sc in $SCENARIOS; do
		args="$(scenario_args "$sc") ${EXTRA_ARGS:-}"
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
			# S4 judges herald's heartbeats (--heartbeat 30s, see start_server)
			# on the sampled streams: late, overdue, missing. refserver's are
			# reported, not judged.
			if [ "$sc" = S4 ] && [ "$target" != refserver ]; then extra="$extra -heartbeat 30s"; fi
			logf="$OUT/$sc-$target-$n.server.log"
			start_server "$target" "$logf" || continue
			log "$sc $target (run $n): herald-bench $args${extra:+ $extra}"
			run="$OUT/$sc-$target-$n"
			rports="$(redis_ports_of "$target")"
			rpids="$(redis_pids_of "$target")"
			if [ -n "$rports" ]; then
				# shellcheck disable=SC2086 # port lists
				commandstats "$run.cmdstat-before" $rports
				# shellcheck disable=SC2086
				census_start "$run.clients.txt" $rports
			fi
			# shellcheck disable=SC2086 # pid lists
			s0="$(cpu_ticks "$server_pid")" r0="$(cpu_ticks $rpids)"
			# shellcheck disable=SC2086 # args are word lists on purpose
			if ! pin "$LOAD_CPUS" "$OUT/bin/herald-bench" -url "$server_url" -pid "$server_pid" \
				-scenario "$sc" -target "$target" -timeout 3m $args $extra >"$run.txt" 2>&1; then
				log "$sc $target: herald-bench failed, see $run.txt"
			fi
			# shellcheck disable=SC2086
			s1="$(cpu_ticks "$server_pid")" r1="$(cpu_ticks $rpids)"
			cpu="$(awk -v a="$s0" -v b="$s1" -v c="$r0" -v d="$r1" -v t="$CLK_TCK" \
				'BEGIN { printf "\"proc_server_cpu_s\":%.3f,\"proc_redis_cpu_s\":%.3f", (b - a) / t, (d - c) / t }')"
			tail -n1 "$run.txt" | grep '^{' | sed "s/}\$/,$cpu}/" >>"$results" || true
			grep -E '^(connected|delivered|latency|completeness|server memory|held|heartbeats|error)' "$run.txt" | sed 's/^/    /' >&2 || true
			log "    cpu (whole run, s): server $(awk -v a="$s0" -v b="$s1" -v t="$CLK_TCK" 'BEGIN { print (b - a) / t }')$([ -n "$rpids" ] && awk -v c="$r0" -v d="$r1" -v t="$CLK_TCK" 'BEGIN { print ", redis " (d - c) / t }')"
			if [ -n "$rports" ]; then
				census_stop
				# shellcheck disable=SC2086
				commandstats "$run.cmdstat-after" $rports
				published="$(tail -n1 "$run.txt" | grep -oE '"published":[0-9]+' | cut -d: -f2 || true)"
				# shellcheck disable=SC2086
				commands_report "$run.cmdstat-before" "$run.cmdstat-after" "${published:-0}" $rports >"$run.commands.txt"
				grep -E '^total (fcall|fcall_ro|publish|spublish|subscribe|ssubscribe|unsubscribe|sunsubscribe|xadd|xrange|xrevrange) ' "$run.commands.txt" |
					awk '{ printf "%s%s %s", (NR > 1 ? ", " : "    redis per event: "), $2, substr($4, 11) } END { if (NR) print "" }' >&2 || true
				census_report "$run.clients.txt" >"$run.clients-summary.txt"
				sed 's/^/    redis clients: /' "$run.clients-summary.txt" >&2
			fi
			stop_server
		done
	done
done
log "done in $((SECONDS - started)) s; summaries in $results"
echo
"$OUT/bin/herald-bench" -compare "$results" -baseline "$BASELINE" | tee "$OUT/table.md"
