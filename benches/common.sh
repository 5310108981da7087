# Shared by the load scripts (benches/load.sh, benches/capacity.sh); sourced, not run.
# Needs ROOT (the repository) and BIN (a switchboard binary, or empty to build one).

# need TOOL:PACKAGE ... — fails saying what to install.
need() {
  local t
  for t in "$@"; do
    command -v "${t%%:*}" >/dev/null || { echo "${t%%:*} not found: apt-get install -y ${t#*:}" >&2; exit 1; }
  done
}

# The release binary, built unless --bin gave one.
ensure_bin() {
  if [[ -z $BIN ]]; then
    cargo build --release --bin switchboard >&2
    BIN=$ROOT/target/release/switchboard
  fi
  [[ -x $BIN ]] || { echo "no switchboard binary at $BIN" >&2; exit 1; }
}

# Every process in PIDS is stopped on exit and the work directory removed (kept, and
# named, when KEEP_WORK is set).
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  if [[ -n ${KEEP_WORK:-} ]]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

wait_ready() { # log file, pid: the server said it is ready (up to 30 s)
  local i
  for i in $(seq 1 300); do
    grep -q 'switchboard ready' "$1" 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

stop_pid() { # SIGTERM, then SIGKILL after 10 s
  kill "$1" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
}

# column (1-based) of the last line of a SIPp -stf CSV
stat_col() { tail -n 1 "$1" | cut -d';' -f"$2"; }
