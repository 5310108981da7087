#!/usr/bin/env bash
# Load benchmark: trunk calls with RTP at increasing rates against a SIPp
# callee registered as extension 2001; reports, per rate, how many calls
# succeeded and were recorded, and the highest rate with zero failures.
#
#   benches/load.sh [--calls N] [--rates "50 100 200 400"] [--call-ms MS]
#                   [--config FILE] [--bin PATH] [--base-port PORT] [--keep-going]
#
#   --calls N        calls per rate (default 2000)
#   --rates LIST     call rates per second to try, ascending (default "50 100 200 400")
#   --call-ms MS     length of each answered call, RTP played throughout (default 1000)
#   --config FILE    server config (default config/switchboard.yaml if present,
#                    else a demo config generated here); its listeners, RTP
#                    ports and data dir are overridden on the command line
#   --bin PATH       switchboard binary (default: cargo build --release)
#   --base-port P    first of the loopback ports used (default 20000; the
#                    server gets RTP ports P+100 … P+4099)
#   --keep-going     try every rate even after one fails
#
# Everything runs on 127.0.0.1; each SIPp run is bounded by -m and by timeout.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

CALLS=2000
RATES="50 100 200 400"
CALL_MS=1000
CONFIG=""
BIN=""
BASE=20000
KEEP_GOING=0
while (($#)); do
  case $1 in
    --calls) CALLS=$2; shift 2 ;;
    --rates) RATES=$2; shift 2 ;;
    --call-ms) CALL_MS=$2; shift 2 ;;
    --config) CONFIG=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    --base-port) BASE=$2; shift 2 ;;
    --keep-going) KEEP_GOING=1; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

. "$ROOT/benches/common.sh"
need sipp:sip-tester sqlite3:sqlite3
PCAP=/usr/share/sip-tester/g711a.pcap
[[ -f $PCAP ]] || { echo "$PCAP missing: apt-get install -y sip-tester" >&2; exit 1; }

ensure_bin

SC=$ROOT/tests/scenarios
WORK=$(mktemp -d -t switchboard-bench-XXXXXX)

SIP_PORT=$BASE
CALLEE_PORT=$((BASE + 2))
CALLEE_MEDIA=$((BASE + 4))
CALLER_PORT=$((BASE + 10))
CALLER_MEDIA=$((BASE + 12))
CP1=$((BASE + 20)); CP2=$((BASE + 21)); CP3=$((BASE + 22))
RTP_LOW=$((BASE + 100)); RTP_HIGH=$((BASE + 4099))

if [[ -z $CONFIG ]]; then
  if [[ -f $ROOT/config/switchboard.yaml ]]; then
    CONFIG=$ROOT/config/switchboard.yaml
  else
    CONFIG=$WORK/demo.yaml
    cat >"$CONFIG" <<'EOF'
sip:
  listen: ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]
  advertise: 127.0.0.1
rtp:
  ports: "20000-20999"
data_dir: ./data
calls:
  ring_timeout_secs: 30
  drain_timeout_secs: 10
trunks:
  - name: loopback
    peers: ["127.0.0.0/8"]
users:
  - { extension: "2001", name: "Agent 2001", password: secret2001, role: agent }
  - { extension: "2002", name: "Agent 2002", password: secret2002, role: agent }
  - { extension: "2003", name: "Agent 2003", password: secret2003, role: agent }
  - { extension: "3001", name: "Supervisor 3001", password: secret3001, role: supervisor }
dids:
  - { number: "100", extension: "2001" }
  - { number: "2001", extension: "2001" }
  - { number: "2002", extension: "2002" }
  - { number: "2003", extension: "2003" }
EOF
  fi
fi


printf '%-6s %-6s %-8s %-8s %-9s %-8s %-8s %s\n' rate calls ok failed answered wall_s cps_got result >&2
ROWS=()
BEST=0
for RATE in $RATES; do
  D=$WORK/r$RATE; mkdir -p "$D/data"
  "$BIN" serve --config "$CONFIG" --sip-listen "127.0.0.1:$SIP_PORT" \
    --rtp-ports "$RTP_LOW-$RTP_HIGH" --data-dir "$D/data" 2>"$D/server.log" &
  SPID=$!; PIDS+=("$SPID")
  if ! wait_ready "$D/server.log" "$SPID"; then
    echo "server did not start:" >&2; tail -20 "$D/server.log" >&2; exit 1
  fi

  # callee: register, then answer every call with RTP echo
  timeout 20 sipp -sf "$SC/register_ok.xml" -m 1 -s 2001 -au 2001 -ap secret2001 \
    -i 127.0.0.1 -p "$CALLEE_PORT" -cp "$CP1" -nostdin -timeout 10s -timeout_error \
    -trace_err -error_file "$D/reg.err" "127.0.0.1:$SIP_PORT" >/dev/null 2>&1 \
    || { echo "REGISTER of 2001 failed (rate $RATE):" >&2; cat "$D/reg.err" >&2; exit 1; }
  LIMIT=$((CALLS / RATE + CALL_MS / 1000 + 60))
  timeout $((LIMIT + 20)) sipp -sf "$SC/uas_answer.xml" -m "$CALLS" -rtp_echo \
    -i 127.0.0.1 -mi 127.0.0.1 -p "$CALLEE_PORT" -mp "$CALLEE_MEDIA" -cp "$CP2" \
    -nostdin -timeout "${LIMIT}s" -timeout_error -trace_err -error_file "$D/uas.err" \
    -trace_stat -stf "$D/uas.csv" -fd 5 >/dev/null 2>&1 &
  UPID=$!; PIDS+=("$UPID")
  sleep 0.5

  # caller: CALLS calls at RATE/s
  T0=$(date +%s.%N)
  set +e
  timeout $((LIMIT + 20)) sipp -sf "$SC/uac_call.xml" -s 2001 -m "$CALLS" -r "$RATE" -rp 1000 \
    -l $((RATE * (CALL_MS / 1000 + 5))) -d "$CALL_MS" \
    -i 127.0.0.1 -mi 127.0.0.1 -p "$CALLER_PORT" -mp "$CALLER_MEDIA" -cp "$CP3" \
    -nostdin -timeout "${LIMIT}s" -timeout_error -trace_err -error_file "$D/uac.err" \
    -trace_stat -stf "$D/uac.csv" -fd 5 "127.0.0.1:$SIP_PORT" >/dev/null 2>&1
  RC=$?
  set -e
  T1=$(date +%s.%N)
  # let the callee finish its last BYEs
  for _ in $(seq 1 100); do kill -0 "$UPID" 2>/dev/null || break; sleep 0.1; done
  stop_pid "$UPID"

  OK=$(stat_col "$D/uac.csv" 16 2>/dev/null || echo 0)
  FAILED=$(stat_col "$D/uac.csv" 18 2>/dev/null || echo "?")
  sleep 1
  ANSWERED=$(sqlite3 -readonly "$D/data/switchboard.db" \
    "select count(*) from calls where disposition='answered'" 2>/dev/null || echo "?")
  stop_pid "$SPID"
  WALL=$(awk "BEGIN{print $T1 - $T0}")
  GOT=$(awk "BEGIN{printf \"%.1f\", $OK / ($WALL - $CALL_MS/1000)}")
  if [[ $RC == 0 && $FAILED == 0 && $OK == "$CALLS" && $ANSWERED == "$CALLS" ]]; then
    RESULT=pass; BEST=$RATE
  else
    RESULT="FAIL (sipp exit $RC)"
  fi
  printf '%-6s %-6s %-8s %-8s %-9s %-8.1f %-8s %s\n' "$RATE" "$CALLS" "$OK" "$FAILED" "$ANSWERED" "$WALL" "$GOT" "$RESULT" >&2
  ROWS+=("$RATE $CALLS $OK $FAILED $ANSWERED $WALL $RESULT")
  if [[ $RESULT != pass ]]; then
    [[ -s $D/uac.err ]] && { echo "caller errors (first lines):" >&2; head -15 "$D/uac.err" >&2; }
    ((KEEP_GOING)) || break
  fi
done

echo
echo "| rate (calls/s) | calls | successful | failed | answered records | wall (s) | result |"
echo "|---|---|---|---|---|---|---|"
for r in "${ROWS[@]}"; do
  read -r a b c d e f g <<<"$r"
  printf '| %s | %s | %s | %s | %s | %.1f | %s |\n' "$a" "$b" "$c" "$d" "$e" "$f" "$g"
done
echo
echo "highest rate with zero failures: ${BEST} calls/s (${CALLS} calls of ${CALL_MS} ms with RTP each)"
