#!/usr/bin/env bash
# Two Switchboard nodes behind Kamailio's dispatcher, sharing one PostgreSQL server, all on
# this machine's loopback: the scale-out recipe of docs/scale-out.md to try by hand.
#
#   scripts/scale-out-demo.sh [--bin PATH] [--check | --load RATE --calls N]
#
# Phones and trunks talk to Kamailio at 127.0.0.1:5060 (KAM_PORT); the nodes are
# 127.0.0.1:5070 (a) and :5080 (b), with the shipped demo configuration (users, queues,
# IVR) plus `store:` and `cluster:`; their APIs on 127.0.0.1:8081 and :8082. Ctrl-C stops
# everything and removes the work directory (KEEP_WORK=1 keeps it).
# --check: registers agent 2002 through Kamailio, places 20 calls through it, checks
# both nodes took calls and every call has a record, then stops (exit 1 otherwise).
# --load RATE --calls N: a measurement instead (figures in docs/scale-out.md): the nodes
# with limits off and one user, 2002, whose phone (a SIPp callee) registers through
# Kamailio; N calls of 2 s to it at RATE per second through Kamailio; prints failed
# calls, records per node and the CPU time of each process.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=
CHECK=
LOAD=
CALLS=1000
while (($#)); do
  case $1 in
    --bin) BIN=$2; shift 2 ;;
    --check) CHECK=1; shift ;;
    --load) LOAD=$2; shift 2 ;;
    --calls) CALLS=$2; shift 2 ;;
    *) echo "usage: $0 [--bin PATH] [--check | --load RATE --calls N]" >&2; exit 2 ;;
  esac
done
KAM_PORT=${KAM_PORT:-5060}
PG_PORT=${PG_PORT:-5433}
NODES=(a b)
SIP=(5070 5080)
RTP=(20000-20999 21000-21999)
API=(8081 8082)
# A load needs more RTP ports than the demo: two pairs a call, 400 calls/s of 2 s.
[[ -n $LOAD ]] && RTP=(20000-29999 30000-39999)

# shellcheck source=../benches/common.sh
source "$ROOT/benches/common.sh"
need kamailio:kamailio sipp:sip-tester psql:postgresql-client
WORK=$(mktemp -d /tmp/switchboard-scale-out.XXXXXX)
# The nodes are stopped as an operator would (SIGTERM: they drain), then the rest.
NODE_PIDS=()
stop_all() {
  local p
  for p in "${NODE_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${NODE_PIDS[@]}"; do stop_pid "$p"; done
  # Kamailio's workers too, not only its main process.
  pkill -f -- "-w $WORK/kamailio" 2>/dev/null || true
  cleanup
}
trap stop_all EXIT
chmod 755 "$WORK"
ensure_bin

start_postgres "$PG_PORT"
URL=$(new_database switchboard)
echo "PostgreSQL: $URL"

for i in 0 1; do
  n=${NODES[$i]}
  mkdir -p "$WORK/node-$n"
  if [[ -n $LOAD ]]; then
    # Limits off, so the load is only the machine's; one user to call.
    { SIP_PORT=${SIP[$i]} STORE_URL=$URL load_config_head scale-out-demo.sh "$WORK/node-$n" \
        "${RTP[$i]%-*}" "${RTP[$i]#*-}"
      echo 'users: [{ extension: "2002", password: secret2002 }]'
      echo 'dids: [{ number: "2002", extension: "2002" }]'
      echo "cluster: { node: $n }"
    } >"$WORK/node-$n.yaml"
  else
    # The shipped demo, plus the two keys that make it a node.
    { cat "$ROOT/config/switchboard.yaml"
      echo "store: $URL"
      echo "cluster: { node: $n, dead_after_secs: 5, drain_notice_secs: 3 }"
    } >"$WORK/node-$n.yaml"
  fi
  (cd "$ROOT" && exec "$BIN" serve --config "$WORK/node-$n.yaml" \
    --sip-listen "127.0.0.1:${SIP[$i]}" --rtp-ports "${RTP[$i]}" \
    --data-dir "$WORK/node-$n" --api-listen "127.0.0.1:${API[$i]}") \
    >"$WORK/node-$n.log" 2>&1 &
  NODE_PIDS+=($!)
  wait_ready "$WORK/node-$n.log" "$!" || { echo "node $n did not start:" >&2; tail -20 "$WORK/node-$n.log" >&2; exit 1; }
  echo "node $n: sip 127.0.0.1:${SIP[$i]}, API http://127.0.0.1:${API[$i]}, log $WORK/node-$n.log"
done

printf '1 sip:127.0.0.1:%s 0 0\n' "${SIP[@]}" >"$WORK/dispatcher.list"
mkdir -p "$WORK/kamailio"
[[ $(id -u) == 0 ]] && chown nobody "$WORK/kamailio" 2>/dev/null || true
kamailio -f "$ROOT/config/kamailio/kamailio.cfg" -DD -E -m 256 -w "$WORK/kamailio" -Y "$WORK/kamailio" \
  -P "$WORK/kamailio/kamailio.pid" \
  -A "LISTEN=udp:127.0.0.1:$KAM_PORT" \
  -A "PING_FROM=\"sip:kamailio@127.0.0.1:$KAM_PORT\"" \
  -A "DS_LIST=\"$WORK/dispatcher.list\"" \
  -A "CTL_SOCKET=\"unix:$WORK/kamailio/kamailio_ctl\"" \
  >"$WORK/kamailio.log" 2>&1 &
PIDS+=($!)
sleep 2
kill -0 "$!" 2>/dev/null || { echo "kamailio did not start:" >&2; tail -20 "$WORK/kamailio.log" >&2; exit 1; }
echo "Kamailio: sip 127.0.0.1:$KAM_PORT (dispatcher state: kamcmd -s unix:$WORK/kamailio/kamailio_ctl dispatcher.list)"

S=$ROOT/tests/scenarios
q() { psql -XAtq "$URL" -c "$1"; }
# CPU seconds (user + system) of the processes whose command line matches $1.
cpu_of() {
  local t=0 p
  for p in $(pgrep -f "$1"); do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$t"
}

if [[ -n $LOAD ]]; then
  need bc:bc
  timeout 20 sipp -sf "$S/register_ok.xml" -s 2002 -au 2002 -ap secret2002 -i 127.0.0.1 -p 5262 \
    -m 1 -nostdin -timeout 10s -timeout_error "127.0.0.1:$KAM_PORT" >/dev/null 2>&1 \
    || { echo "REGISTER of 2002 through Kamailio failed" >&2; exit 1; }
  sipp -sf "$S/uas_answer.xml" -i 127.0.0.1 -p 5262 -mp 5264 -m "$CALLS" -nostdin \
    -timeout $((CALLS / LOAD + 60))s >/dev/null 2>&1 &
  PIDS+=($!)
  declare -A before
  for k in node-a node-b kamailio postgres; do before[$k]=$(cpu_of "$k"); done
  start=$(date +%s.%N)
  timeout $((CALLS / LOAD + 90)) sipp -sf "$S/uac_call.xml" -s 2002 -i 127.0.0.1 -p 5270 -mp 5272 \
    -m "$CALLS" -r "$LOAD" -l $((LOAD * 10)) -d 2000 -nostdin -timeout $((CALLS / LOAD + 60))s \
    -trace_stat -stf "$WORK/calls.csv" "127.0.0.1:$KAM_PORT" >/dev/null 2>&1 || true
  took=$(echo "$(date +%s.%N) - $start" | bc)
  hz=$(getconf CLK_TCK)
  sleep 2
  echo "$CALLS calls at $LOAD/s through Kamailio, in ${took%.*} s:"
  echo "  callers: $(stat_col "$WORK/calls.csv" 16) succeeded, $(stat_col "$WORK/calls.csv" 18) failed"
  echo "  records per node: $(q "SELECT e.node || '=' || COUNT(*) FROM calls c JOIN events e
    ON e.call_uuid = c.call_uuid AND e.type = 'call.arrived' GROUP BY e.node ORDER BY e.node" | paste -sd' ')"
  for k in node-a node-b kamailio postgres; do
    t=$(( $(cpu_of "$k") - before[$k] ))
    printf '  CPU %-9s %6.1f s (%.1f %% of a core)\n' "$k" "$(echo "$t / $hz" | bc -l)" \
      "$(echo "100 * $t / $hz / $took" | bc -l)"
  done
  exit 0
fi

if [[ -z $CHECK ]]; then
  echo "Register phones and send calls to 127.0.0.1:$KAM_PORT; Ctrl-C stops everything."
  wait
  exit 0
fi

# --check: an agent phone through the dispatcher, 20 calls to it, records of all.
timeout 20 sipp -sf "$S/register_ok.xml" -s 2002 -au 2002 -ap secret2002 -i 127.0.0.1 -p 5262 \
  -m 1 -nostdin -timeout 10s -timeout_error "127.0.0.1:$KAM_PORT" >/dev/null 2>&1 \
  || { echo "REGISTER of 2002 through Kamailio failed" >&2; exit 1; }
timeout 60 sipp -sf "$S/uas_answer.xml" -i 127.0.0.1 -p 5262 -mp 5264 -m 20 -nostdin \
  -timeout 50s -bg >/dev/null 2>&1 || true
timeout 60 sipp -sf "$S/uac_call.xml" -s 2002 -i 127.0.0.1 -p 5270 -mp 5272 -m 20 -r 5 -d 1000 \
  -nostdin -timeout 50s -timeout_error -trace_stat -stf "$WORK/calls.csv" "127.0.0.1:$KAM_PORT" \
  >/dev/null 2>&1 || true
pkill -f "sipp -sf $S/uas_answer.xml" 2>/dev/null || true
sleep 1
per_node=$(q "SELECT e.node || '=' || COUNT(*) FROM calls c JOIN events e ON e.call_uuid = c.call_uuid
              AND e.type = 'call.arrived' WHERE c.dialed = '2002' GROUP BY e.node ORDER BY e.node" | paste -sd' ')
records=$(q "SELECT COUNT(*) FROM calls WHERE dialed = '2002' AND disposition = 'answered'")
echo "20 calls through Kamailio: answered records $records, per node: $per_node"
[[ $records == 20 && $per_node == a=*' 'b=* ]] || { echo "check failed" >&2; exit 1; }
echo "check passed"
