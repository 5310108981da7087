#!/usr/bin/env bash
# Runs every fuzz target from its seed corpus in fuzz/corpus/. New inputs go to
# fuzz/.work/ (not committed); a crash stops the run, leaves its input in
# fuzz/artifacts/<target>/ and fails the script.
#   scripts/fuzz.sh            # the smoke run CI does: 20,000 inputs per target, seed 1
#   scripts/fuzz.sh 1800       # a long run: 30 min per target, random seed
#   scripts/fuzz.sh 600 sdp    # one target
# The smoke run is a fixed count from a fixed seed, so it finds the same on every
# machine: it checks the targets and the seeds, and fails only on a real regression.
# cargo-fuzz is installed into .tools/ (inside the repository) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-smoke}
shift || true
if [[ $mode == smoke ]]; then
  budget=(-runs=20000 -seed=1)
else
  budget=(-max_total_time="$mode")
fi
targets=("$@")
((${#targets[@]})) || targets=(sip_message sip_stream sdp rtp flow_yaml config_yaml stun)

if [[ ! -x .tools/bin/cargo-fuzz ]]; then
  cargo install cargo-fuzz --version 0.13.2 --locked --root .tools
fi
# libFuzzer's instrumentation flags are unstable rustc options; this toolchain is stable.
export RUSTC_BOOTSTRAP=1
fuzz=(.tools/bin/cargo-fuzz fuzz)
"${fuzz[@]}" build --sanitizer address
failed=()
for t in "${targets[@]}"; do
  mkdir -p "fuzz/.work/$t" "fuzz/artifacts/$t"
  echo "== fuzz $t (${budget[*]})"
  if ! "${fuzz[@]}" run --sanitizer address "$t" "fuzz/.work/$t" "fuzz/corpus/$t" -- \
      "${budget[@]}" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 2>"fuzz/.work/$t.log"; then
    failed+=("$t")
    tail -n 40 "fuzz/.work/$t.log" >&2
  fi
  grep -E '^stat::(number_of_executed_units|new_units_added|peak_rss_mb)|cov: ' "fuzz/.work/$t.log" \
    | tail -n 4 || true
done
if ((${#failed[@]})); then
  echo "fuzz targets that crashed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
