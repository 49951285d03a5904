#!/usr/bin/env bash
# Load benchmark of token_auth: plain Caddy (respond "ok") against Caddy with
# token_auth in front of the same respond "ok", A/B runs alternated, CPU time
# per request compared. See bench/README.md.
#
#   bench/run.sh                       # the four scenarios, 5 pairs of 5 s
#   PAIRS=7 DURATION=8 bench/run.sh    # longer
#   SCALE=1 bench/run.sh               # plus the 1,000 vs 1,000,000 token store
#   SCENARIOS="hs256 rs256" bench/run.sh
#   PROFILE=rs256_distinct bench/run.sh  # plus a CPU profile of that scenario
#   PG=1 bench/run.sh                  # plus opaque_pg: the PostgreSQL store (own server)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

PAIRS=${PAIRS:-5}             # A/B pairs per scenario
DURATION=${DURATION:-5}       # seconds per wrk run
WARMUP=${WARMUP:-2}           # seconds of unmeasured warm-up per target
CONNS=${CONNS:-32}            # wrk connections
CADDY_CPU=${CADDY_CPU:-0}     # CPU the Caddy processes are pinned to
WRK_CPU=${WRK_CPU:-1}         # CPU wrk is pinned to
DISTINCT=${DISTINCT:-2000}    # distinct RS256 JWTs in rs256_distinct
SCALE=${SCALE:-0}             # 1: also run the 1k vs 1M token store scenario
SCALE_BIG=${SCALE_BIG:-1000000}
SCALE_SMALL=${SCALE_SMALL:-1000}
SCENARIOS=${SCENARIOS:-"opaque hs256 rs256 rs256_distinct"}
PROFILE=${PROFILE:-}          # scenario to profile (pprof via the admin endpoint)
PROFILE_SECONDS=${PROFILE_SECONDS:-10}
PORT=${PORT:-18080}           # plain: PORT, token_auth: PORT+1, scale: PORT+2, PORT+3
ADMIN=${ADMIN:-12018}         # admin endpoints: ADMIN, ADMIN+1, ...
PG=${PG:-0}                   # 1: also the opaque_pg scenario (adds opaque and opaque_pg to SCENARIOS)
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_PORT=${PG_PORT:-15432}     # first port tried for the benchmark's own PostgreSQL (127.0.0.1)

if [ "$PG" = 1 ]; then
	case " $SCENARIOS " in *" opaque "*) ;; *) SCENARIOS="opaque $SCENARIOS" ;; esac
	case " $SCENARIOS " in *" opaque_pg "*) ;; *) SCENARIOS="$SCENARIOS opaque_pg" ;; esac
fi
WITH_PG=0
case " $SCENARIOS " in *" opaque_pg "*) WITH_PG=1 ;; esac

OUT=$ROOT/bench/out
CREDS=$OUT/creds
RUNDIR=$OUT/run
RUNS=$OUT/runs.tsv
RESULTS=$OUT/results.txt
TCK=$(getconf CLK_TCK)

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# --- prerequisites ----------------------------------------------------------
command -v taskset >/dev/null || die "taskset missing (util-linux)"
command -v curl >/dev/null || die "curl missing"
if ! command -v wrk >/dev/null; then
	log "installing wrk"
	if [ "$(id -u)" = 0 ]; then
		apt-get update -qq && apt-get install -y -qq wrk >/dev/null
	else
		sudo apt-get update -qq && sudo apt-get install -y -qq wrk >/dev/null
	fi
fi
[ "$(nproc)" -ge 2 ] || log "WARNING: fewer than 2 CPUs; Caddy and wrk will share one"
if [ "$WITH_PG" = 1 ]; then
	[ -x "$PG_BIN/initdb" ] && [ -x "$PG_BIN/pg_ctl" ] || die "opaque_pg: no PostgreSQL in $PG_BIN (set PG_BIN)"
	id postgres >/dev/null 2>&1 || die "opaque_pg: no 'postgres' OS user to run the server as"
	[ "$(id -u)" = 0 ] || die "opaque_pg: run as root (the PostgreSQL server runs as the postgres user via runuser)"
fi

mkdir -p "$OUT" "$CREDS"
rm -rf "$RUNDIR"
mkdir -p "$RUNDIR"

# REF=<commit>: build that commit (git archive into bench/out/src) instead of
# the working tree, e.g. while others have half-written files in it.
SRC=$ROOT
if [ -n "${REF:-}" ]; then
	SRC=$OUT/src
	rm -rf "$SRC" && mkdir -p "$SRC"
	git archive "$REF" | tar -x -C "$SRC"
	rm -rf "$SRC/bench" && mkdir -p "$SRC/bench" && cp -r "$ROOT/bench/gen" "$SRC/bench/"
	log "building $REF ($(git rev-parse --short "$REF")) from a snapshot in bench/out/src"
fi
log "building caddy with the plugin -> bench/out/caddy"
(cd "$SRC" && go build -o "$OUT/caddy" ./cmd/caddy && go build -o "$OUT/gen" ./bench/gen)
CADDY=$OUT/caddy

log "generating credentials ($DISTINCT distinct RS256 JWTs)"
legacy_arg=""
[ "$SCALE" = 1 ] && legacy_arg="-legacy $SCALE_SMALL,$SCALE_BIG"
# shellcheck disable=SC2086
"$OUT/gen" -out "$CREDS" -distinct "$DISTINCT" $legacy_arg

DB=$RUNDIR/tokens.db
OPAQUE=$("$CADDY" token-auth create --db "$DB" --user bench --name bench --expires never) ||
	die "caddy token-auth create failed (CLI not available?)"
[ -n "$OPAQUE" ] || die "empty token from caddy token-auth create"
HS_SECRET=$(cat "$CREDS/hs256.secret")
HS=$(cat "$CREDS/hs256.jwt")
RS=$(cat "$CREDS/rs256.jwt")

# --- Caddy processes ----------------------------------------------------------
PIDS=()
PGDATA_DIR=""
cleanup() {
	local p
	for p in "${PIDS[@]}"; do
		kill "$p" 2>/dev/null || true
	done
	for p in "${PIDS[@]}"; do
		wait "$p" 2>/dev/null || true
	done
	if [ -n "$PGDATA_DIR" ] && [ -f "$PGDATA_DIR/data/postmaster.pid" ]; then
		runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PGDATA_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
	fi
	if [ -n "$PGDATA_DIR" ]; then rm -rf "$PGDATA_DIR"; fi
}
trap cleanup EXIT

# start_caddy <name> <caddyfile>: prints the pid
start_caddy() {
	local name=$1 cf=$2 d=$RUNDIR/$1
	mkdir -p "$d/data" "$d/config"
	XDG_DATA_HOME=$d/data XDG_CONFIG_HOME=$d/config GOMAXPROCS=1 \
		taskset -c "$CADDY_CPU" "$CADDY" run --config "$cf" --adapter caddyfile \
		>"$d/caddy.log" 2>&1 &
	echo $!
}

wait_http() { # <url> <pid>
	local i
	for i in $(seq 1 100); do
		curl -s -o /dev/null "$1" && return 0
		kill -0 "$2" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

caddyfile_common() { # <admin port>
	cat <<EOF
{
	admin 127.0.0.1:$1
	auto_https off
	persist_config off
	log {
		level WARN
	}
}
EOF
}

P_PLAIN=$PORT
P_AUTH=$((PORT + 1))
A_PLAIN=$ADMIN
A_AUTH=$((ADMIN + 1))

{ caddyfile_common "$A_PLAIN"; cat <<EOF
http://127.0.0.1:$P_PLAIN {
	respond "ok"
}
EOF
} >"$RUNDIR/plain.Caddyfile"

{ caddyfile_common "$A_AUTH"; cat <<EOF
http://127.0.0.1:$P_AUTH {
	token_auth {
		db $DB
		jwt {
			secret $HS_SECRET
			public_key $CREDS/rs256_pub.pem
		}
	}
	respond "ok"
}
EOF
} >"$RUNDIR/auth.Caddyfile"

PID_PLAIN=$(start_caddy plain "$RUNDIR/plain.Caddyfile"); PIDS+=("$PID_PLAIN")
PID_AUTH=$(start_caddy auth "$RUNDIR/auth.Caddyfile"); PIDS+=("$PID_AUTH")
wait_http "http://127.0.0.1:$P_PLAIN/" "$PID_PLAIN" || { cat "$RUNDIR/plain/caddy.log"; die "plain caddy did not start"; }
wait_http "http://127.0.0.1:$P_AUTH/" "$PID_AUTH" || { cat "$RUNDIR/auth/caddy.log"; die "token_auth caddy did not start"; }
log "plain caddy pid $PID_PLAIN on :$P_PLAIN, token_auth caddy pid $PID_AUTH on :$P_AUTH (both on CPU $CADDY_CPU, GOMAXPROCS=1)"

# --- optional: PostgreSQL store (opaque_pg) ---------------------------------------
# Its own throw-away server, run as the postgres OS user (it refuses root), trust
# auth on 127.0.0.1 only, pinned to wrk's CPU: with a warm cache token_auth
# barely queries it. A third Caddy (like the token_auth one) uses it as store.
P_PG=$((PORT + 4))
A_PG=$((ADMIN + 4))
OPAQUE_PG=""
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pg_ticks() { # CPU ticks of the server: postmaster (incl. its exited children) + live children
	local pm c t
	pm=$(head -1 "$PGDATA_DIR/data/postmaster.pid")
	t=$(awk '{print $14 + $15 + $16 + $17}' "/proc/$pm/stat")
	for c in $(pgrep -P "$pm"); do
		t=$((t + $(awk '{print $14 + $15}' "/proc/$c/stat" 2>/dev/null || echo 0)))
	done
	echo "$t"
}
if [ "$WITH_PG" = 1 ]; then
	while ! port_free "$PG_PORT"; do PG_PORT=$((PG_PORT + 1)); done
	PGDATA_DIR=$(mktemp -d "$OUT/pg.XXXXXX")
	chown postgres: "$PGDATA_DIR"
	log "starting PostgreSQL ($PG_BIN) on 127.0.0.1:$PG_PORT, data in ${PGDATA_DIR#"$ROOT"/}, CPU $WRK_CPU"
	runuser -u postgres -- "$PG_BIN/initdb" -D "$PGDATA_DIR/data" -U postgres --auth=trust \
		--encoding=UTF8 --no-sync >"$PGDATA_DIR/initdb.log" 2>&1 ||
		{ cat "$PGDATA_DIR/initdb.log"; die "initdb failed"; }
	taskset -c "$WRK_CPU" runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PGDATA_DIR/data" \
		-l "$PGDATA_DIR/postgres.log" -w -t 30 \
		-o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PGDATA_DIR -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
		start >/dev/null 2>&1 || { cat "$PGDATA_DIR/postgres.log"; die "PostgreSQL did not start"; }
	PG_DSN="postgres://postgres@127.0.0.1:$PG_PORT/postgres?sslmode=disable"
	{ caddyfile_common "$A_PG"; cat <<EOF
http://127.0.0.1:$P_PG {
	token_auth {
		store postgres "$PG_DSN"
		jwt {
			secret $HS_SECRET
			public_key $CREDS/rs256_pub.pem
		}
	}
	respond "ok"
}
EOF
	} >"$RUNDIR/pg.Caddyfile"
	PID_PG=$(start_caddy pg "$RUNDIR/pg.Caddyfile"); PIDS+=("$PID_PG")
	wait_http "http://127.0.0.1:$P_PG/" "$PID_PG" || { cat "$RUNDIR/pg/caddy.log"; die "postgres-store caddy did not start"; }
	resp=$(curl -s -w '\n%{http_code}' -X POST -H 'Content-Type: application/json' \
		-d '{"user":"bench","name":"bench","expires_in":"never"}' "http://127.0.0.1:$A_PG/token_auth/tokens")
	[ "${resp##*$'\n'}" = 201 ] || die "creating a token through the admin API of the postgres-store caddy: $resp"
	OPAQUE_PG=$(printf '%s' "${resp%$'\n'*}" | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
	[ -n "$OPAQUE_PG" ] || die "no \"token\" in the admin API answer: $resp"
	code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P_PG/")
	[ "$code" = 401 ] || die "postgres-store caddy answered $code without credentials, want 401"
	log "postgres-store caddy pid $PID_PG on :$P_PG (CPU $CADDY_CPU, GOMAXPROCS=1), store $PG_DSN"
fi
# auth_port_of / auth_pid_of <scenario>: the token_auth Caddy that serves it
auth_port_of() { if [ "$1" = opaque_pg ]; then echo "$P_PG"; else echo "$P_AUTH"; fi; }
auth_pid_of() { if [ "$1" = opaque_pg ]; then echo "$PID_PG"; else echo "$PID_AUTH"; fi; }

# --- scenarios ------------------------------------------------------------------
# scenario_args <scenario> <port>: wrk arguments (the same shape for plain and
# token_auth, so only the authentication differs); sets ENV_TOKENS/ENV_MODE for Lua.
scenario_args() {
	local s=$1 port=$2 base="http://127.0.0.1:$2"
	ENV_TOKENS="" ENV_MODE=""
	case $s in
	opaque) ARGS=("$base/?token=$OPAQUE") ;;
	opaque_pg) ARGS=("$base/?token=$OPAQUE_PG") ;;
	hs256) ARGS=(-H "Authorization: Bearer $HS" "$base/") ;;
	rs256) ARGS=(-H "Authorization: Bearer $RS" "$base/") ;;
	rs256_distinct)
		ARGS=(-s "$ROOT/bench/cycle.lua" "$base/")
		ENV_TOKENS=$CREDS/rs256_distinct.txt ENV_MODE=bearer ;;
	scale_small | scale_big)
		local n=$SCALE_SMALL
		[ "$s" = scale_big ] && n=$SCALE_BIG
		ARGS=(-s "$ROOT/bench/cycle.lua" "$base/")
		ENV_TOKENS=$CREDS/legacy_$n.sample ENV_MODE=query ;;
	*) die "unknown scenario $s" ;;
	esac
}

target_of() {
	case $1 in
	opaque | opaque_pg | hs256) echo 0.90 ;;
	rs256) echo 0.85 ;;
	rs256_distinct) echo 0.40 ;;
	*) echo - ;;
	esac
}

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# run_wrk <seconds> <scenario> <port>: runs wrk, leaves its output in $WRK_OUT
WRK_OUT=$RUNDIR/wrk.out
run_wrk() {
	scenario_args "$2" "$3"
	TOKENS_FILE=$ENV_TOKENS TOKEN_MODE=$ENV_MODE \
		taskset -c "$WRK_CPU" wrk -t1 -c"$CONNS" -d"$1"s "${ARGS[@]}" >"$WRK_OUT" 2>&1 ||
		{ cat "$WRK_OUT"; die "wrk failed"; }
}

# measure <scenario> <kind> <round> <pid> <port>: one measured run, appended to $RUNS
measure() {
	local s=$1 kind=$2 round=$3 pid=$4 port=$5 t0 t1 req rps bad
	t0=$(ticks "$pid")
	run_wrk "$DURATION" "$s" "$port"
	t1=$(ticks "$pid")
	req=$(awk '/requests in/ {print $1; exit}' "$WRK_OUT")
	rps=$(awk '/^Requests\/sec:/ {print $2; exit}' "$WRK_OUT")
	bad=$(awk '/Non-2xx or 3xx responses:/ {print $NF; exit}' "$WRK_OUT")
	bad=${bad:-0}
	[ -n "$req" ] && [ "$req" -gt 0 ] || { cat "$WRK_OUT"; die "no requests in $s/$kind"; }
	[ "$bad" = 0 ] || { cat "$WRK_OUT"; die "$s/$kind: $bad non-2xx responses (the benchmark would measure failures)"; }
	printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$s" "$kind" "$round" "$req" "$((t1 - t0))" "$rps" >>"$RUNS"
	log "$(printf '%-15s %-6s round %s: %8s req  %6.0f req/s  %4s ticks  %6.1f us CPU/req' \
		"$s" "$kind" "$round" "$req" "$rps" "$((t1 - t0))" \
		"$(awk -v t=$((t1 - t0)) -v r="$req" -v k="$TCK" 'BEGIN{print t/k/r*1e6}')")"
}

check_status() { # <scenario> <port> <want>
	scenario_args "$1" "$2"
	local url=${ARGS[-1]} code hdr=()
	if [ "$1" = rs256_distinct ]; then hdr=(-H "Authorization: Bearer $(sed -n 7p "$ENV_TOKENS")"); fi
	if [ "$ENV_MODE" = query ]; then url="${url}?token=$(sed -n 7p "$ENV_TOKENS")"; fi
	if [ "${ARGS[0]}" = -H ]; then hdr=(-H "${ARGS[1]}"); fi
	code=$(curl -s -o /dev/null -w '%{http_code}' "${hdr[@]}" "$url")
	[ "$code" = "$3" ] || die "sanity check $1 on :$2: got HTTP $code, want $3"
}

# sanity: token_auth is on (401 without credentials) and every scenario passes (200)
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P_AUTH/")
[ "$code" = 401 ] || die "token_auth caddy answered $code without credentials, want 401"
for s in $SCENARIOS; do
	check_status "$s" "$(auth_port_of "$s")" 200
	check_status "$s" "$P_PLAIN" 200
done
log "sanity checks passed (401 without credentials, 200 for every scenario)"

: >"$RUNS"
printf 'scenario\tkind\tround\trequests\tticks\trps\n' >"$RUNS.header"

for s in $SCENARIOS; do # warm-up: JIT-free Go, but fills caches, TCP, GC heap size
	run_wrk "$WARMUP" "$s" "$P_PLAIN"
	run_wrk "$WARMUP" "$s" "$(auth_port_of "$s")"
done

PG_T0=0 PG_T1=0
if [ "$WITH_PG" = 1 ]; then PG_T0=$(pg_ticks); fi
log "measuring: $PAIRS pairs x {$SCENARIOS}, ${DURATION}s each, -c$CONNS"
# With both opaque and opaque_pg, they run back to back, opaque_pg with the sides
# the other way round and the two swapped in even rounds: plain bbolt PG plain,
# then plain PG bbolt plain, so bbolt and PG are always measured next to each other.
PAIRED=0
case " $SCENARIOS " in *" opaque "*) case " $SCENARIOS " in *" opaque_pg "*) PAIRED=1 ;; esac ;; esac
round_order() { # <round>
	local s out=""
	for s in $SCENARIOS; do
		[ "$PAIRED" = 1 ] && [ "$s" = opaque_pg ] && continue
		if [ "$PAIRED" = 1 ] && [ "$s" = opaque ]; then
			if [ $(($1 % 2)) = 1 ]; then out="$out opaque opaque_pg"; else out="$out opaque_pg opaque"; fi
		else
			out="$out $s"
		fi
	done
	echo "$out"
}
for r in $(seq 1 "$PAIRS"); do
	for s in $(round_order "$r"); do
		odd=$((r % 2))
		[ "$PAIRED" = 1 ] && [ "$s" = opaque_pg ] && odd=$((1 - odd))
		if [ "$odd" = 1 ]; then # alternate which side goes first
			measure "$s" plain "$r" "$PID_PLAIN" "$P_PLAIN"
			measure "$s" auth "$r" "$(auth_pid_of "$s")" "$(auth_port_of "$s")"
		else
			measure "$s" auth "$r" "$(auth_pid_of "$s")" "$(auth_port_of "$s")"
			measure "$s" plain "$r" "$PID_PLAIN" "$P_PLAIN"
		fi
	done
done
if [ "$WITH_PG" = 1 ]; then PG_T1=$(pg_ticks); fi

# --- optional profile -----------------------------------------------------------
if [ -n "$PROFILE" ]; then
	log "profiling token_auth caddy under $PROFILE for ${PROFILE_SECONDS}s"
	curl -s -o "$OUT/$PROFILE.pprof" \
		"http://127.0.0.1:$A_AUTH/debug/pprof/profile?seconds=$PROFILE_SECONDS" &
	cpid=$!
	sleep 0.5
	run_wrk "$((PROFILE_SECONDS + 1))" "$PROFILE" "$P_AUTH"
	wait "$cpid"
	go tool pprof -top -nodecount=40 "$CADDY" "$OUT/$PROFILE.pprof" >"$OUT/$PROFILE.top.txt" 2>/dev/null || true
	log "profile: bench/out/$PROFILE.pprof, top: bench/out/$PROFILE.top.txt"
fi

# --- optional scale scenario ----------------------------------------------------
SCALE_TXT=""
if [ "$SCALE" = 1 ]; then
	P_SMALL=$((PORT + 2)); P_BIG=$((PORT + 3))
	declare -A SDB SPID SIMPORT
	for which in small big; do
		n=$SCALE_SMALL; [ $which = big ] && n=$SCALE_BIG
		db=$RUNDIR/scale_$n.db
		log "importing $n legacy tokens into $db"
		t0=$(date +%s.%N)
		"$CADDY" token-auth import --db "$db" --file "$CREDS/legacy_$n.jsonl" >&2 ||
			die "caddy token-auth import failed (not available?)"
		SIMPORT[$which]=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
		SDB[$which]=$db
	done
	for which in small big; do
		port=$P_SMALL; adm=$((ADMIN + 2))
		[ $which = big ] && { port=$P_BIG; adm=$((ADMIN + 3)); }
		{ caddyfile_common "$adm"; cat <<EOF
http://127.0.0.1:$port {
	token_auth {
		db ${SDB[$which]}
	}
	respond "ok"
}
EOF
		} >"$RUNDIR/scale_$which.Caddyfile"
		SPID[$which]=$(start_caddy "scale_$which" "$RUNDIR/scale_$which.Caddyfile")
		PIDS+=("${SPID[$which]}")
		wait_http "http://127.0.0.1:$port/" "${SPID[$which]}" ||
			{ cat "$RUNDIR/scale_$which/caddy.log"; die "scale_$which caddy did not start"; }
		check_status "scale_$which" "$port" 200
	done
	log "scale: stores of $SCALE_SMALL and $SCALE_BIG tokens; cycling 2,000 distinct opaque tokens in the query"
	for s in scale_small scale_big; do
		p=$P_SMALL; [ $s = scale_big ] && p=$P_BIG
		run_wrk "$WARMUP" "$s" "$p"
		run_wrk "$WARMUP" "$s" "$P_PLAIN"
	done
	for r in $(seq 1 "$PAIRS"); do
		measure scale_small plain "$r" "$PID_PLAIN" "$P_PLAIN"
		measure scale_small auth "$r" "${SPID[small]}" "$P_SMALL"
		measure scale_big auth "$r" "${SPID[big]}" "$P_BIG"
	done
	rss() { awk '/^VmRSS:/ {v=$2} /^RssAnon:/ {a=$2} /^RssFile:/ {f=$2} END {printf "%.0f MiB (anon %.0f, file %.0f)", v/1024, a/1024, f/1024}' "/proc/$1/status"; }
	size() { stat -c %s "$1"; }
	SCALE_TXT=$(
		printf '\nScale: token store of %s vs %s tokens (opaque, 2,000 distinct tokens cycled in ?token=)\n' "$SCALE_SMALL" "$SCALE_BIG"
		printf '%-14s %12s %12s %12s %17s %10s   %s\n' store "file bytes" "bytes/token" "import time" "plain/this CPU/req" "req/s" "VmRSS after the runs"
		for which in small big; do
			n=$SCALE_SMALL; [ $which = big ] && n=$SCALE_BIG
			printf '%-14s %12s %12.0f %11ss %17s %10s   %s\n' "$n tokens" "$(size "${SDB[$which]}")" \
				"$(awk -v s="$(size "${SDB[$which]}")" -v n="$n" 'BEGIN{print s/(n+0)}')" \
				"${SIMPORT[$which]}" \
				"$(awk -f "$ROOT/bench/summary.awk" -v mode=ratio -v a=scale_small:plain -v b="scale_$which:auth" "$RUNS")" \
				"$(awk -f "$ROOT/bench/summary.awk" -v mode=rps -v a="scale_$which:auth" "$RUNS")" \
				"$(rss "${SPID[$which]}")"
		done
		printf 'median CPU/request ratio %s-store / %s-store: %s (1.0 = store size costs nothing)\n' \
			"$SCALE_SMALL" "$SCALE_BIG" \
			"$(awk -f "$ROOT/bench/summary.awk" -v mode=ratio -v a=scale_small:auth -v b=scale_big:auth "$RUNS")"
		printf 'plain Caddy VmRSS after all runs: %s\n' "$(rss "$PID_PLAIN")"
	)
fi

# --- report -------------------------------------------------------------------------
{
	printf 'token_auth load benchmark  %s  (built from %s)\n' "$(date -u +%FT%TZ)" \
		"$([ -n "${REF:-}" ] && git rev-parse --short "$REF" || echo "working tree at $(git rev-parse --short HEAD)")"
	printf 'Caddy GOMAXPROCS=1 on CPU %s, wrk -t1 -c%s on CPU %s, %s pairs x %ss, CPU = utime+stime of the Caddy process\n' \
		"$CADDY_CPU" "$CONNS" "$WRK_CPU" "$PAIRS" "$DURATION"
	printf 'ratio = median over pairs of (plain CPU/request) / (token_auth CPU/request); 1.0 = authentication is free\n\n'
	printf '%-16s %6s %7s %5s %10s %12s %11s %11s %10s %10s\n' scenario ratio target "" "min-max" "plain req/s" "auth req/s" "plain us/r" "auth us/r" "auth cpu%"
	for s in $SCENARIOS; do
		ratio=$(awk -f "$ROOT/bench/summary.awk" -v mode=ratio -v a="$s:plain" -v b="$s:auth" "$RUNS")
		range=$(awk -f "$ROOT/bench/summary.awk" -v mode=range -v a="$s:plain" -v b="$s:auth" "$RUNS")
		tgt=$(target_of "$s")
		ok=$(awk -v r="$ratio" -v t="$tgt" 'BEGIN{print (r+0 >= t+0) ? "ok" : "MISS"}')
		printf '%-16s %6s %7s %5s %10s %12s %11s %11s %10s %10s\n' "$s" "$ratio" ">=$tgt" "$ok" "$range" \
			"$(awk -f "$ROOT/bench/summary.awk" -v mode=rps -v a="$s:plain" "$RUNS")" \
			"$(awk -f "$ROOT/bench/summary.awk" -v mode=rps -v a="$s:auth" "$RUNS")" \
			"$(awk -f "$ROOT/bench/summary.awk" -v mode=us -v a="$s:plain" -v tck="$TCK" "$RUNS")" \
			"$(awk -f "$ROOT/bench/summary.awk" -v mode=us -v a="$s:auth" -v tck="$TCK" "$RUNS")" \
			"$(awk -f "$ROOT/bench/summary.awk" -v mode=util -v a="$s:auth" -v tck="$TCK" -v dur="$DURATION" "$RUNS")"
	done
	printf '(us/r = CPU microseconds per request, absolute, noisy; auth cpu%% = share of one CPU the token_auth\n'
	printf ' Caddy got during its runs: well below 100%% means other processes competed for CPU %s)\n' "$CADDY_CPU"
	if [ "$WITH_PG" = 1 ]; then
		pgr=$(awk -f "$ROOT/bench/summary.awk" -v mode=ratio -v a=opaque:auth -v b=opaque_pg:auth "$RUNS")
		printf '\nPG vs bbolt opaque CPU/request: %s  target >=0.90 %s  (min-max %s; median over rounds of bbolt us/r / PG us/r, both in every round)\n' \
			"$pgr" "$(awk -v r="$pgr" 'BEGIN{print (r+0 >= 0.90) ? "ok" : "MISS"}')" \
			"$(awk -f "$ROOT/bench/summary.awk" -v mode=range -v a=opaque:auth -v b=opaque_pg:auth "$RUNS")"
		printf 'opaque_pg: store postgres on 127.0.0.1:%s (own server, CPU %s, default cache_ttl 5s); PostgreSQL server CPU over all measured runs: %s s\n' \
			"$PG_PORT" "$WRK_CPU" "$(awk -v t=$((PG_T1 - PG_T0)) -v k="$TCK" 'BEGIN{printf "%.2f", t/k}')"
	fi
	printf '%s\n' "$SCALE_TXT"
	printf '\nVmRSS after runs: plain %s, token_auth %s\n' \
		"$(awk '/^VmRSS:/ {printf "%.1f MiB", $2/1024}' "/proc/$PID_PLAIN/status")" \
		"$(awk '/^VmRSS:/ {printf "%.1f MiB", $2/1024}' "/proc/$PID_AUTH/status")"
	if [ "$WITH_PG" = 1 ]; then
		printf 'VmRSS after runs: token_auth with the PostgreSQL store %s\n' \
			"$(awk '/^VmRSS:/ {printf "%.1f MiB", $2/1024}' "/proc/$PID_PG/status")"
	fi
	if [ -n "$PROFILE" ]; then
		printf 'CPU profile of token_auth Caddy under %s: bench/out/%s.pprof (top: bench/out/%s.top.txt)\n' "$PROFILE" "$PROFILE" "$PROFILE"
	fi
	printf 'load average at the end: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
	printf 'raw runs: bench/out/runs.tsv (scenario kind round requests ticks rps)\n'
} | tee "$RESULTS"
