#!/usr/bin/env bash
# Soak: waves of concurrent bridged calls against one long-running server, to show that
# its memory goes back to where it started once each wave has ended and that no call
# fails over a long run.
#
#   benches/soak.sh [--minutes M] [--calls N] [--rate CPS] [--hold-secs S] [--bin PATH]
#                   [--base-port P] [--callees K]
#
#   --minutes M      how long to keep sending waves (default 30)
#   --calls N        calls per wave, all up at once (default 300)
#   --rate CPS       calls set up per second within a wave (default 50)
#   --hold-secs S    length of each call (default 30)
#   --bin PATH       switchboard binary (default: cargo build --release)
#   --base-port P    first of the loopback ports used (default 34000)
#   --callees K      SIPp callees echoing RTP, calls spread over them (default 4)
#
# Each wave: one SIPp caller places N trunk calls to the callees' DIDs in turn, every
# call streaming a tone both ways (the callees echo it) for the hold time; the wave ends
# when the caller has hung up every call. Then, with no call up, the server's VmRSS is
# read after it has been idle for 40 s: the wave's last transactions have waited out
# their 32 s (RFC 3261's Timer J and the like) and the server, which hands freed memory
# back every 10 s, has done so since. The idle RSS before the first wave is the
# baseline; the last line says whether the RSS after the last wave is within ±10 % of
# it and how many calls failed in all. Everything runs on 127.0.0.1; each SIPp run is
# bounded by timeout and the whole run by the minutes given.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

MINUTES=30
CALLS=300
RATE=50
HOLD=30
BIN=""
BASE=34000
CALLEES=4
while (($#)); do
  case $1 in
    --minutes) MINUTES=$2; shift 2 ;;
    --calls) CALLS=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --hold-secs) HOLD=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    --base-port) BASE=$2; shift 2 ;;
    --callees) CALLEES=$2; shift 2 ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

. "$ROOT/benches/common.sh"
need sipp:sip-tester sqlite3:sqlite3 sox:sox
ensure_bin

SC=$ROOT/benches/scenarios
WORK=$(mktemp -d -t switchboard-soak-XXXXXX)
SIP_PORT=$BASE
CALLER_PORT=$((BASE + 10))
sox -n -r 8000 -c 1 -t ul "$WORK/load-tone.ul" synth 10 sine 440 vol 0.3
mkdir -p "$WORK/data"
{ load_config_head soak.sh "$WORK/data" $((BASE + 1000)) $((BASE + 4999)); cat <<EOF
users:
$(for k in $(seq 1 "$CALLEES"); do echo "  - { extension: \"200$k\", password: secret200$k, role: agent }"; done)
dids:
$(for k in $(seq 1 "$CALLEES"); do echo "  - { number: \"200$k\", extension: \"200$k\", record: never }"; done)
recording:
  policy: never
EOF
} >"$WORK/switchboard.yaml"
{ echo SEQUENTIAL; for k in $(seq 1 "$CALLEES"); do echo "200$k;"; done; } >"$WORK/dids.csv"


"$BIN" serve --config "$WORK/switchboard.yaml" 2>"$WORK/server.log" &
SPID=$!; PIDS+=("$SPID")
wait_ready "$WORK/server.log" "$SPID" || { echo "server did not start:" >&2; tail -20 "$WORK/server.log" >&2; exit 1; }

# The callees answer every call of every wave, for the whole run.
END=$(($(date +%s) + MINUTES * 60))
for k in $(seq 1 "$CALLEES"); do
  register_callee "$k" "$WORK/reg$k.err"
  timeout $((MINUTES * 60 + HOLD + 300)) sipp -sf "$SC/uas_answer_codec.xml" -key pt 0 -key codec PCMU -rtp_echo \
    -i 127.0.0.1 -mi 127.0.0.1 -p "$(callee_port "$k")" -mp "$(callee_media "$k")" -cp $((BASE + 20 + k)) \
    -nostdin -trace_err -error_file "$WORK/uas$k.err" >/dev/null 2>&1 &
  PIDS+=($!)
done
sleep 5
IDLE=$(rss_kib "$SPID")
echo "idle RSS before the first wave: $IDLE KiB; waves of $CALLS calls ($HOLD s each) for $MINUTES min" >&2

echo "| wave | calls | successful | failed | peak RSS KiB | idle RSS KiB after | vs. first idle |"
echo "|---|---|---|---|---|---|---|"
WAVE=0; TOTAL_FAILED=0; TOTAL=0; AFTER=$IDLE
while (($(date +%s) + CALLS / RATE + HOLD + 40 < END)); do
  WAVE=$((WAVE + 1))
  (cd "$WORK" && exec timeout $((CALLS / RATE + HOLD + 120)) sipp -sf "$SC/uac_stream.xml" -inf "$WORK/dids.csv" \
    -m "$CALLS" -l "$CALLS" -r "$RATE" -d $((HOLD * 1000)) \
    -i 127.0.0.1 -mi 127.0.0.1 -p "$CALLER_PORT" -cp $((BASE + 35)) -rtp_threadtasks 50 \
    -nostdin -trace_err -error_file "$WORK/uac$WAVE.err" \
    -trace_stat -stf "$WORK/uac$WAVE.csv" -fd 1 "127.0.0.1:$SIP_PORT" >/dev/null 2>&1) &
  CPID=$!
  PEAK=0
  while kill -0 "$CPID" 2>/dev/null; do
    r=$(rss_kib "$SPID"); ((r > PEAK)) && PEAK=$r
    sleep 1
  done
  wait "$CPID" || true
  OK=$(stat_col "$WORK/uac$WAVE.csv" 16 2>/dev/null || echo 0)
  FAILED=$((CALLS - OK))
  TOTAL=$((TOTAL + CALLS)); TOTAL_FAILED=$((TOTAL_FAILED + FAILED))
  sleep 40
  AFTER=$(rss_kib "$SPID")
  printf '| %d | %d | %d | %d | %d | %d | %+.1f %% |\n' "$WAVE" "$CALLS" "$OK" "$FAILED" "$PEAK" "$AFTER" \
    "$(awk -v a="$AFTER" -v i="$IDLE" 'BEGIN { print (a - i) * 100 / i }')"
done

RECORDS=$(sqlite3 -readonly "$WORK/data/switchboard.db" "select count(*) from calls where disposition = 'answered'")
DIFF=$(awk -v a="$AFTER" -v i="$IDLE" 'BEGIN { printf "%+.1f", (a - i) * 100 / i }')
WITHIN=$(awk -v a="$AFTER" -v i="$IDLE" 'BEGIN { d = (a - i) / i; print (d <= 0.10 && d >= -0.10) ? "yes" : "no" }')
echo
echo "$WAVE waves, $TOTAL calls, $TOTAL_FAILED failed, $RECORDS answered records; idle RSS $IDLE KiB before, $AFTER KiB after ($DIFF %, within ±10 %: $WITHIN)"
[[ $TOTAL_FAILED == 0 && $RECORDS == "$TOTAL" && $WITHIN == yes ]]
