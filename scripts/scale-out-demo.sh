#!/usr/bin/env bash
# Two Switchboard nodes behind Kamailio's dispatcher, sharing one PostgreSQL server, all on
# this machine's loopback: the scale-out recipe of docs/scale-out.md to try by hand.
#
#   scripts/scale-out-demo.sh [--bin PATH] [--check]
#
# Phones and trunks talk to Kamailio at 127.0.0.1:5060 (KAM_PORT); the nodes are
# 127.0.0.1:5070 (a) and :5080 (b), with the shipped demo configuration (users, queues,
# IVR) plus `store:` and `cluster:`; their APIs on 127.0.0.1:8081 and :8082. Ctrl-C stops
# everything and removes the work directory (KEEP_WORK=1 keeps it).
# --check: registers agent 2002 through Kamailio, places 20 calls through it, checks
# both nodes took calls and every call has a record, then stops (exit 1 otherwise).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=
CHECK=
while (($#)); do
  case $1 in
    --bin) BIN=$2; shift 2 ;;
    --check) CHECK=1; shift ;;
    *) echo "usage: $0 [--bin PATH] [--check]" >&2; exit 2 ;;
  esac
done
KAM_PORT=${KAM_PORT:-5060}
PG_PORT=${PG_PORT:-5433}
NODES=(a b)
SIP=(5070 5080)
RTP=(20000-20999 21000-21999)
API=(8081 8082)

# shellcheck source=../benches/common.sh
source "$ROOT/benches/common.sh"
need kamailio:kamailio sipp:sip-tester psql:postgresql-client
WORK=$(mktemp -d /tmp/switchboard-scale-out.XXXXXX)
chmod 755 "$WORK"
ensure_bin

start_postgres "$PG_PORT"
URL=$(new_database switchboard)
echo "PostgreSQL: $URL"

for i in 0 1; do
  n=${NODES[$i]}
  mkdir -p "$WORK/node-$n"
  # The shipped demo, plus the two keys that make it a node.
  { cat "$ROOT/config/switchboard.yaml"
    echo "store: $URL"
    echo "cluster: { node: $n, dead_after_secs: 5, drain_notice_secs: 3 }"
  } >"$WORK/node-$n.yaml"
  (cd "$ROOT" && exec "$BIN" serve --config "$WORK/node-$n.yaml" \
    --sip-listen "127.0.0.1:${SIP[$i]}" --rtp-ports "${RTP[$i]}" \
    --data-dir "$WORK/node-$n" --api-listen "127.0.0.1:${API[$i]}") \
    >"$WORK/node-$n.log" 2>&1 &
  PIDS+=($!)
  wait_ready "$WORK/node-$n.log" "$!" || { echo "node $n did not start:" >&2; tail -20 "$WORK/node-$n.log" >&2; exit 1; }
  echo "node $n: sip 127.0.0.1:${SIP[$i]}, API http://127.0.0.1:${API[$i]}, log $WORK/node-$n.log"
done

printf '1 sip:127.0.0.1:%s 0 0\n' "${SIP[@]}" >"$WORK/dispatcher.list"
mkdir -p "$WORK/kamailio"
[[ $(id -u) == 0 ]] && chown nobody "$WORK/kamailio" 2>/dev/null || true
kamailio -f "$ROOT/config/kamailio/kamailio.cfg" -DD -E -w "$WORK/kamailio" -Y "$WORK/kamailio" \
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

if [[ -z $CHECK ]]; then
  echo "Register phones and send calls to 127.0.0.1:$KAM_PORT; Ctrl-C stops everything."
  wait
  exit 0
fi

# --check: an agent phone through the dispatcher, 20 calls to it, records of all.
S=$ROOT/tests/scenarios
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
q() { psql -XAtq "$URL" -c "$1"; }
per_node=$(q "SELECT e.node || '=' || COUNT(*) FROM calls c JOIN events e ON e.call_uuid = c.call_uuid
              AND e.type = 'call.arrived' WHERE c.dialed = '2002' GROUP BY e.node ORDER BY e.node" | paste -sd' ')
records=$(q "SELECT COUNT(*) FROM calls WHERE dialed = '2002' AND disposition = 'answered'")
echo "20 calls through Kamailio: answered records $records, per node: $per_node"
[[ $records == 20 && $per_node == a=*' 'b=* ]] || { echo "check failed" >&2; exit 1; }
echo "check passed"
