#!/usr/bin/env bash
# Self-check of the SIPp scenarios without switchboard: each caller-side
# scenario is run against a callee-side scenario (or a stand-in peer from
# peers/) directly over 127.0.0.1, so a broken XML or a wrong message flow
# shows up before the server is involved.
#   tests/scenarios/selfcheck.sh [BASE_PORT]   (uses BASE_PORT..BASE_PORT+30)
set -euo pipefail
cd "$(dirname "$0")"
command -v sipp >/dev/null || { echo "sipp not found: apt-get install sip-tester" >&2; exit 1; }
BASE=${1:-15600}
UAS_P=$BASE; UAC_P=$((BASE + 2)); UAS_MP=$((BASE + 10)); UAC_MP=$((BASE + 20))
OUT=$(mktemp -d); trap 'rm -rf "$OUT"' EXIT
COMMON=(-i 127.0.0.1 -nostdin -timeout 30s -timeout_error -trace_err -trace_msg)
pass=0; fail=0

# run_pair NAME "UAS ARGS..." "UAC ARGS..."
run_pair() {
  local name=$1 uas_args=$2 uac_args=$3 uas_rc uac_rc
  # shellcheck disable=SC2086
  timeout 40 sipp $uas_args -m 1 -p "$UAS_P" -cp $((BASE + 28)) "${COMMON[@]}" \
    -message_file "$OUT/$name.uas.msg" -error_file "$OUT/$name.uas.err" \
    >"$OUT/$name.uas.out" 2>&1 &
  local uas_pid=$!
  sleep 0.5
  # shellcheck disable=SC2086
  timeout 40 sipp $uac_args -m 1 -p "$UAC_P" -cp $((BASE + 29)) "${COMMON[@]}" \
    -message_file "$OUT/$name.uac.msg" -error_file "$OUT/$name.uac.err" \
    "127.0.0.1:$UAS_P" >"$OUT/$name.uac.out" 2>&1 && uac_rc=0 || uac_rc=$?
  wait "$uas_pid" && uas_rc=0 || uas_rc=$?
  if [[ $uac_rc == 0 && $uas_rc == 0 ]]; then
    echo "ok   $name"; pass=$((pass + 1))
  else
    echo "FAIL $name (caller exit $uac_rc, callee exit $uas_rc)"; fail=$((fail + 1))
    tail -n 30 "$OUT/$name".*.err 2>/dev/null || true
  fi
}

# the ACK of a non-2xx answer (and a CANCEL) must carry the INVITE's branch
same_branch() {
  local name=$1 method=$2 inv m
  inv=$(grep -A2 '^INVITE ' "$OUT/$name.uac.msg" | sed -n 's/^Via:.*branch=\([^;]*\).*/\1/p' | head -1)
  m=$(grep -A2 "^$method " "$OUT/$name.uac.msg" | sed -n 's/^Via:.*branch=\([^;]*\).*/\1/p' | head -1)
  if [[ -n $inv && $inv == "$m" ]]; then echo "ok   $name: $method branch = INVITE branch"; pass=$((pass + 1))
  else echo "FAIL $name: $method branch '$m' != INVITE branch '$inv'"; fail=$((fail + 1)); fi
}

run_pair register_ok "-sf peers/fake_registrar.xml -key user 2001 -key pass secret2001" \
  "-sf register_ok.xml -s 2001 -au 2001 -ap secret2001"
run_pair register_contact "-sf peers/fake_registrar.xml -key user 2001 -key pass secret2001" \
  "-sf register_contact.xml -s 2001 -au 2001 -ap secret2001 -key contact_port 5999"
run_pair register_bad "-sf peers/fake_registrar.xml -key user 2001 -key pass secret2001" \
  "-sf register_bad.xml -s 2001 -au 2001 -ap wrong"
run_pair unregister "-sf peers/fake_registrar.xml -key user 2001 -key pass secret2001" \
  "-sf unregister.xml -s 2001 -au 2001 -ap secret2001"
run_pair options "-sf peers/fake_options.xml" "-sf options.xml"
run_pair call "-sf uas_answer.xml -rtp_echo -mp $UAS_MP" \
  "-sf uac_call.xml -d 2000 -s 2001 -mp $UAC_MP"
run_pair call_callee_bye "-sf uas_answer_then_bye.xml -d 2000 -rtp_echo -mp $UAS_MP" \
  "-sf uac_call_wait_bye.xml -s 2001 -mp $UAC_MP"
run_pair codec_wait_bye "-sf uas_answer_then_bye.xml -d 1000 -rtp_echo -mp $UAS_MP" \
  "-sf uac_codec_wait_bye.xml -s 100 -key pt 9 -key codec G722 -mp $UAC_MP"
run_pair cancel "-sf uas_ring_forever.xml" "-sf uac_cancel.xml -s 2001 -mp $UAC_MP"
same_branch cancel CANCEL
same_branch cancel ACK
run_pair busy "-sf uas_busy.xml" "-sf uac_expect_486.xml -s 2001 -mp $UAC_MP"
same_branch busy ACK
run_pair decline "-sf uas_decline.xml" "-sf uac_expect_603.xml -s 2001 -mp $UAC_MP"
same_branch decline ACK
# stand-ins for the server's own rejections: uas_busy.xml with another code
sed 's/486 Busy Here/480 Temporarily Unavailable/' uas_busy.xml >"$OUT/reject480.xml"
sed 's/486 Busy Here/403 Forbidden/' uas_busy.xml >"$OUT/reject403.xml"
run_pair unavailable "-sf $OUT/reject480.xml" \
  "-sf uac_expect_480.xml -s 2001 -mp $UAC_MP"
run_pair refused "-sf $OUT/reject403.xml" \
  "-sf uac_expect_403.xml -s 2001 -mp $UAC_MP"
same_branch refused ACK

echo "$pass passed, $fail failed"
[[ $fail == 0 ]]
