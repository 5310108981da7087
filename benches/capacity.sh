#!/usr/bin/env bash
# Capacity benchmark: N concurrent calls with RTP both ways held through the server, at
# rising N; per step it reports the server's CPU per call (% of one core), memory per
# call, RTP packets relayed per second, loss and jitter, setup latency and failures.
#
#   benches/capacity.sh [--scenario NAME] [--calls "100 300 600 1000"] [--rate CPS]
#                       [--window-secs S] [--hold-secs S] [--bin PATH] [--base-port P]
#
#   --scenario NAME  bridge     trunk caller (PCMU) → a callee extension (PCMU), forwarded
#                    recorded   as bridge, every tenth call recorded (its DID says so)
#                    transcode  the caller reaches the callee through a flow's transfer,
#                               and it answers G.722 only: PCMU ↔ G.722 on every packet
#                    moh        callers wait in a queue with no agent and hear music
#                    ivr        IVR → queue → agent: the flow's menu answers, the caller
#                               presses 1 (RFC 4733), waits in a queue and an agent
#                               (one of --agents registered extensions spread over the
#                               callees) answers; the conversation is then bridged
#                    (default bridge)
#   --calls LIST     concurrent calls per step (default "100 300 600 1000")
#   --rate CPS       calls set up per second while ramping up (default 50)
#   --window-secs S  steady-state measuring window, all calls up (default 20)
#   --hold-secs S    length of each call (default: long enough for the ramp, 3 s to
#                    settle and the window, at least 60; a shorter one given here makes
#                    a set-up rate run: calls end while others are still being set up)
#   --bin PATH       switchboard binary (default: cargo build --release)
#   --base-port P    first of the loopback ports used (default 30000)
#   --callees K      SIPp callees (extensions 2001…), calls spread over them in turn, so
#                    that echoing is not one SIPp thread's job (default 4)
#   --agents A       ivr: agents in the queue (extensions 5001…; default: the largest
#                    step, so every concurrent caller can be talking to one)
#   --kernel MODE    rtp.kernel_forwarding: off (default), auto or on; with on, plain
#                    bridges are forwarded in the kernel from their first second (needs
#                    root and a build with clang); the last column counts those calls
#   --store KIND     sqlite (default: the data directory's database) or postgres: a
#                    PostgreSQL server started for the run, a new database per step
#
# The load generator (SIPp: the caller streams a tone as 50 packets/s, the callee
# echoes every packet) runs on the same machine and its CPU is reported beside the
# server's, and so is the whole machine's (/proc/stat, all but idle and iowait, in % of
# one core): the kernel's packet work, kernel forwarding included, is charged to
# whichever process it interrupts. CPU is utime+stime of the server process from /proc over the window; memory
# is VmRSS in the window minus VmRSS of the idle server just before the step. Loss and
# jitter are the call records' (each leg's RTP as the server received it); setup times
# are SIPp's per call (-trace_rtt): INVITE → 100 Trying and INVITE → 200 OK.
# Everything runs on 127.0.0.1; every process is bounded by timeout.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SCENARIO=bridge
STEPS="100 300 600 1000"
RATE=50
WINDOW=20
HOLD=""
BIN=""
BASE=30000
CALLEES=4
AGENTS=""
KERNEL_FORWARDING=off
STORE=sqlite
while (($#)); do
  case $1 in
    --scenario) SCENARIO=$2; shift 2 ;;
    --calls) STEPS=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --window-secs) WINDOW=$2; shift 2 ;;
    --hold-secs) HOLD=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    --base-port) BASE=$2; shift 2 ;;
    --callees) CALLEES=$2; shift 2 ;;
    --agents) AGENTS=$2; shift 2 ;;
    --kernel) KERNEL_FORWARDING=$2; shift 2 ;;
    --store) STORE=$2; shift 2 ;;
    -h|--help) sed -n '2,40p' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case $STORE in sqlite|postgres) ;; *) echo "unknown store $STORE (sqlite, postgres)" >&2; exit 2 ;; esac
case $SCENARIO in bridge|recorded|transcode|moh|ivr) ;; *)
  echo "unknown scenario $SCENARIO (bridge, recorded, transcode, moh, ivr)" >&2; exit 2 ;;
esac
if [[ -z $AGENTS ]]; then AGENTS=0; for n in $STEPS; do ((n > AGENTS)) && AGENTS=$n; done; fi

. "$ROOT/benches/common.sh"
need sipp:sip-tester sqlite3:sqlite3 sox:sox python3:python3
[[ -f /usr/share/sip-tester/dtmf_2833_1.pcap ]] || { echo "dtmf_2833_1.pcap missing: apt-get install -y sip-tester" >&2; exit 1; }
ensure_bin

SC=$ROOT/benches/scenarios
WORK=$(mktemp -d -t switchboard-capacity-XXXXXX)

SIP_PORT=$BASE
CALLER_PORT=$((BASE + 10))
CALLER_MEDIA=$((BASE + 12))
API_PORT=$((BASE + 30))
RTP_LOW=$((BASE + 1000)); RTP_HIGH=$((BASE + 9999))
CLK_TCK=$(getconf CLK_TCK)

# The caller's audio: a tone, raw u-law, looked up by SIPp in its working directory.
sox -n -r 8000 -c 1 -t ul "$WORK/load-tone.ul" synth 10 sine 440 vol 0.3
[[ $STORE == postgres ]] && start_postgres $((BASE + 990))

write_config() { # file, data dir
  { load_config_head capacity.sh "$2" "$RTP_LOW" "$RTP_HIGH"; cat <<EOF
users:
$(for k in $(seq 1 "$CALLEES"); do echo "  - { extension: \"200$k\", name: \"Load callee $k\", password: secret200$k, role: agent }"; done)
$(if [[ $SCENARIO == ivr ]]; then for a in $(seq 1 "$AGENTS"); do echo "  - { extension: \"$((5000 + a))\", password: secret$((5000 + a)), role: agent }"; done; fi)
dids:
$(for k in $(seq 1 "$CALLEES"); do
    echo "  - { number: \"200$k\", extension: \"200$k\", record: never }"
    echo "  - { number: \"209$k\", extension: \"200$k\", record: always }"
    echo "  - { number: \"400$k\", flow: to_200$k }"
  done)
  - { number: "300", flow: wait }
  - { number: "500", flow: menu }
recording:
  policy: never
ivr:
  flows: $WORK/flows
  prompts: $ROOT/prompts
queues:
  - { name: hold, skills: {}, members: [], when_empty: wait, max_wait_secs: 3600 }
  - name: sales
    skills: {}
    strategy: longest_idle
    ring_timeout_secs: 10
    wrap_up_secs: 0
    when_empty: wait
    max_wait_secs: 3600
    members: [$(if [[ $SCENARIO == ivr ]]; then seq -s, 5001 $((5000 + AGENTS)); fi)]
api:
  listen: 127.0.0.1:$API_PORT
EOF
  } >"$1"
}
mkdir -p "$WORK/flows"
cat >"$WORK/flows/wait.yaml" <<'EOF'
name: wait
entry: queue
prompts: en
nodes:
  queue:
    queue:
      queue: hold
      next: bye
  bye:
    hangup: {}
EOF
cat >"$WORK/flows/menu.yaml" <<'EOF'
name: menu
entry: menu
prompts: en
nodes:
  menu:
    menu:
      prompts: [main_menu]
      options:
        "1": sales
      timeout_secs: 5
      retries: 1
      on_fail: bye
  sales:
    queue:
      queue: sales
      next: bye
  bye:
    hangup: {}
EOF
# Answered by the flow first, so the callee's leg is offered every codec we have.
for k in $(seq 1 "$CALLEES"); do
  cat >"$WORK/flows/to_200$k.yaml" <<EOF
name: to_200$k
entry: callee
prompts: en
nodes:
  callee:
    transfer: { extension: "200$k" }
EOF
done

# The DIDs the callers dial, one per call in turn.
case $SCENARIO in
  # every tenth call recorded, the callees in turn
  recorded) { echo SEQUENTIAL; for i in $(seq 0 $((10 * CALLEES - 1))); do
      k=$((i % CALLEES + 1)); if ((i % 10 == 9)); then echo "209$k;"; else echo "200$k;"; fi
    done; } >"$WORK/dids.csv" ;;
  moh) printf 'SEQUENTIAL\n300;\n' >"$WORK/dids.csv" ;;
  transcode) { echo SEQUENTIAL; for k in $(seq 1 "$CALLEES"); do echo "400$k;"; done; } >"$WORK/dids.csv" ;;
  ivr) printf 'SEQUENTIAL\n500;\n' >"$WORK/dids.csv" ;;
  *) { echo SEQUENTIAL; for k in $(seq 1 "$CALLEES"); do echo "200$k;"; done; } >"$WORK/dids.csv" ;;
esac
if [[ $SCENARIO == transcode ]]; then CODEC=(-key pt 9 -key codec G722); else CODEC=(-key pt 0 -key codec PCMU); fi
UAC=uac_stream.xml; [[ $SCENARIO == ivr ]] && UAC=uac_ivr_stream.xml
# ivr: the agents, spread over the callees in turn (agent a answers on callee a % K + 1)
if [[ $SCENARIO == ivr ]]; then
  for k in $(seq 1 "$CALLEES"); do
    { echo SEQUENTIAL; for a in $(seq "$k" "$CALLEES" "$AGENTS"); do echo "$((5000 + a));[authentication username=$((5000 + a)) password=secret$((5000 + a))];"; done; } >"$WORK/agents$k.csv"
  done
fi

# a process's utime+stime in clock ticks (all its threads)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# the whole machine's idle clock ticks (idle and iowait, which the kernel measures
# exactly, where its busy columns are sampled at each tick): busy is the rest of the
# window. What the kernel does for packets in softirq is charged to whichever process
# it interrupts, or to none.
idle_ticks() { awk '/^cpu / {print $5 + $6}' /proc/stat; }
NCPU=$(nproc)

echo "scenario $SCENARIO: steps $STEPS, ramp $RATE calls/s, window ${WINDOW}s" >&2
ROWS=()
for N in $STEPS; do
  D=$WORK/n$N; mkdir -p "$D/data"
  # where this step's records go, and how the figures below read them
  if [[ $STORE == postgres ]]; then STORE_URL=$(new_database "step$N"); DB=$STORE_URL; else DB=$D/data/switchboard.db; fi
  write_config "$D/switchboard.yaml" "$D/data"
  HOLD_S=${HOLD:-$(( N / RATE + WINDOW + 10 ))}
  [[ -n $HOLD ]] || ((HOLD_S >= 60)) || HOLD_S=60
  "$BIN" serve --config "$D/switchboard.yaml" 2>"$D/server.log" &
  SPID=$!; PIDS+=("$SPID")
  wait_ready "$D/server.log" "$SPID" || { echo "server did not start:" >&2; tail -20 "$D/server.log" >&2; exit 1; }
  sleep 2
  IDLE_RSS=$(rss_kib "$SPID")

  if [[ $SCENARIO != moh ]]; then
    UPIDS=()
    for k in $(seq 1 "$CALLEES"); do
      register_callee "$k" "$D/reg$k.err"
      if [[ $SCENARIO == ivr ]]; then
        COUNT=$(($(wc -l <"$WORK/agents$k.csv") - 1))
        timeout 60 sipp -sf "$SC/register_agents.xml" -inf "$WORK/agents$k.csv" -m "$COUNT" -r 200 -l 200 \
          -key contact_port "$(callee_port "$k")" -i 127.0.0.1 -p $((BASE + 20)) -nostdin -timeout 50s -timeout_error \
          -trace_err -error_file "$D/agents$k.err" "127.0.0.1:$SIP_PORT" >/dev/null 2>&1 \
          || { echo "REGISTER of the agents on callee $k failed:" >&2; head -20 "$D/agents$k.err" >&2; exit 1; }
      fi
      timeout $((HOLD_S + N / RATE + 60)) sipp -sf "$SC/uas_answer_codec.xml" "${CODEC[@]}" -m "$N" -rtp_echo \
        -i 127.0.0.1 -mi 127.0.0.1 -p "$(callee_port "$k")" -mp "$(callee_media "$k")" -cp $((BASE + 20 + k)) \
        -nostdin -trace_err -error_file "$D/uas$k.err" >/dev/null 2>&1 &
      UPIDS+=($!); PIDS+=($!)
    done
    sleep 0.5
  fi

  (cd "$WORK" && exec timeout $((HOLD_S + N / RATE + 60)) sipp -sf "$SC/$UAC" -inf "$WORK/dids.csv" \
    -m "$N" -l "$N" -r "$RATE" -d $((HOLD_S * 1000)) \
    -i 127.0.0.1 -mi 127.0.0.1 -p "$CALLER_PORT" -mp "$CALLER_MEDIA" -cp $((BASE + 35)) -rtp_threadtasks 50 \
    -nostdin -trace_err -error_file "$D/uac.err" -trace_rtt -rtt_freq 1 \
    -trace_stat -stf "$D/uac.csv" -fd 1 "127.0.0.1:$SIP_PORT" >/dev/null 2>&1) &
  CPID=$!; PIDS+=("$CPID")

  # steady state: every call set up, then a moment to settle
  sleep $(( N / RATE + 3 ))
  LOADGEN=$(pgrep -f "sipp -sf $SC/" | tr '\n' ' ')
  lg_ticks() { local t=0 p; for p in $LOADGEN; do t=$((t + $(cpu_ticks "$p" 2>/dev/null || echo 0))); done; echo $t; }
  C0=$(cpu_ticks "$SPID"); L0=$(lg_ticks); M0=$(idle_ticks); T0=$(date +%s.%N)
  sleep "$WINDOW"
  C1=$(cpu_ticks "$SPID"); L1=$(lg_ticks); M1=$(idle_ticks); T1=$(date +%s.%N)
  RSS=$(rss_kib "$SPID")
  UP=$(stat_col "$D/uac.csv" 13 2>/dev/null || echo "?")   # CurrentCall

  wait "$CPID" && RC=0 || RC=$?
  # the callees wait for more calls than they get: stopped once the callers are done
  if [[ $SCENARIO != moh ]]; then sleep 1; for p in "${UPIDS[@]}"; do stop_pid "$p"; done; fi
  OK=$(stat_col "$D/uac.csv" 16 2>/dev/null || echo 0)
  FAILED=$(stat_col "$D/uac.csv" 18 2>/dev/null || echo "?")
  # the records are written off the call path: give the writer a moment
  for _ in $(seq 1 50); do
    if [[ $STORE == postgres ]]; then n=$(psql -XAtq "$DB" -c "select count(*) from calls" 2>/dev/null || echo 0)
    else n=$(sqlite3 -readonly "$DB" "select count(*) from calls" 2>/dev/null || echo 0); fi
    [[ $n -ge $N ]] && break; sleep 0.2
  done
  stop_pid "$SPID"

  # loss: each leg's RTP as the server received it (A: the caller's stream, B: the
  # callee's echo); jitter: the median and worst call, both legs averaged
  read -r RECS LOSS_A LOSS_B JIT JIT_MAX PPS_CALL WAIT50 WAIT99 KCALLS < <(python3 - "$DB" <<'EOF'
import sqlite3, subprocess, sys
class Psql:
    """The few queries below, on PostgreSQL through psql (numbers only, NULL as 0)."""
    def __init__(self, url): self.url = url
    def execute(self, sql):
        out = subprocess.run(["psql", "-XAtq", "-F", "\t", self.url, "-c", sql],
                             capture_output=True, text=True, check=True).stdout
        return Rows([tuple(float(f) if f else 0 for f in line.split("\t")) for line in out.splitlines()])
class Rows(list):
    def fetchall(self): return self
    def fetchone(self): return self[0]
src = sys.argv[1]
db = Psql(src) if src.startswith("postgres") else sqlite3.connect("file:%s?mode=ro" % src, uri=True)
# ivr: from queueing to the agent's answer (the queue log's CONNECT wait)
waits = sorted(r[0] for r in db.execute("select wait_ms from queue_log where event = 'CONNECT'"))
def q(v, p): return "%d" % v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))] if v else "-"
rows = db.execute("""select a_rtp_in, a_rtp_lost, b_rtp_in, b_rtp_lost, (a_jitter_ms + b_jitter_ms) / 2,
    ended_ms - coalesce(bridged_ms, answered_ms, ended_ms) from calls where answered_ms is not null""").fetchall()
def pct(lost, got): return "%.3f" % (100.0 * lost / max(1, lost + got))
jit = sorted(r[4] for r in rows) or [0]
print(len(rows), pct(sum(r[1] for r in rows), sum(r[0] for r in rows)),
      pct(sum(r[3] for r in rows), sum(r[2] for r in rows)),
      "%.2f" % jit[len(jit) // 2], "%.2f" % jit[-1],
      "%.1f" % (sum(r[0] + r[2] for r in rows) * 1000.0 / max(1, sum(r[5] for r in rows))),
      q(waits, 50), q(waits, 99),
      int(db.execute("select count(*) from calls where media_path = 'kernel'").fetchone()[0]))
EOF
)
  read -r TRY50 TRY99 SET50 SET99 < <(python3 - "$WORK" <<'EOF'
import csv, glob, sys
by = {"1": [], "2": []}
for f in glob.glob(sys.argv[1] + "/uac_*_rtt.csv"):
    for row in csv.DictReader(open(f), delimiter=";"):
        by.setdefault(row["rtd_no"], []).append(float(row["response_time_ms"]))
def pct(v, p):
    if not v: return "-"
    v = sorted(v); return "%g" % v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]
print(pct(by["1"], 50), pct(by["1"], 99), pct(by["2"], 50), pct(by["2"], 99))
EOF
)
  rm -f "$WORK"/uac_*_rtt.csv
  read -r CPU_CALL LG_CPU RSS_CALL MACHINE < <(awk -v c0="$C0" -v c1="$C1" -v l0="$L0" -v l1="$L1" \
    -v m0="$M0" -v m1="$M1" -v ncpu="$NCPU" -v t0="$T0" -v t1="$T1" -v hz="$CLK_TCK" -v n="$N" -v rss="$RSS" -v idle="$IDLE_RSS" 'BEGIN {
      secs = t1 - t0; cpu = (c1 - c0) / hz / secs * 100; lg = (l1 - l0) / hz / secs * 100
      printf "%.4f %.0f %.1f %.0f\n", cpu / n, lg, (rss - idle) / n, (ncpu - (m1 - m0) / hz / secs) * 100 }')
  PPS=$(awk -v p="$PPS_CALL" -v n="$N" 'BEGIN { printf "%.0f", p * n }')
  printf '%-10s %5s calls (%s up): %s %% core/call, %s KiB/call (idle %s KiB), %s pkt/s, loss A %s %% B %s %%, jitter median %s ms (worst %s), 100 Trying p50/p99 %s/%s ms, 200 OK p50/p99 %s/%s ms, queued to agent p50/p99 %s/%s ms, %s ok, %s failed, %s records, load generator %s %% core, whole machine %s %% core, %s calls forwarded in the kernel\n' \
    "$SCENARIO" "$N" "$UP" "$CPU_CALL" "$RSS_CALL" "$IDLE_RSS" "$PPS" "$LOSS_A" "$LOSS_B" "$JIT" "$JIT_MAX" "$TRY50" "$TRY99" "$SET50" "$SET99" "$WAIT50" "$WAIT99" "$OK" "$FAILED" "$RECS" "$LG_CPU" "$MACHINE" "$KCALLS" >&2
  ROWS+=("| $SCENARIO | $N | $CPU_CALL | $RSS_CALL | $PPS | $LOSS_A / $LOSS_B | $JIT ($JIT_MAX) | $TRY50 / $TRY99 | $SET50 / $SET99 | $WAIT50 / $WAIT99 | $FAILED | $RECS | $LG_CPU | $MACHINE | $KCALLS |")
  [[ -s $D/uac.err ]] && { echo "caller errors (first lines):" >&2; grep -v '^The following' "$D/uac.err" | head -5 >&2; }
done

echo
echo "| scenario | calls | CPU % of a core per call | RSS KiB per call | RTP packets relayed/s | loss % caller / callee stream | jitter ms, median (worst) call | 100 Trying p50 / p99 ms | 200 OK p50 / p99 ms | queued → agent p50 / p99 ms | failed | records | load generator % core | whole machine % core | kernel-forwarded calls |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
