#!/usr/bin/env bash
# Installs what the integration tests drive (on Debian, as root, only when a
# tool is missing), checks the SIPp scenarios against each other, then runs
# every test target.
set -euo pipefail
cd "$(dirname "$0")/.."

# tool → Debian package
declare -A PKG=(
  [sipp]=sip-tester
  [baresip]=baresip
  [sox]=sox
  [tshark]=tshark
  [sqlite3]=sqlite3
  [espeak-ng]=espeak-ng
  [prometheus]=prometheus
  [chromium]=chromium
  [chromedriver]=chromium-driver
  [svwar]=sipvicious
  [nft]=nftables
  [ip]=iproute2
  # the kernel forwarding program is built from C for the BPF target
  [clang]=clang
  # the SIP load balancer of the two-node test
  [kamailio]=kamailio
)
missing=()
for tool in "${!PKG[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
# the RTP captures the scenarios play ship with sip-tester
[[ -f /usr/share/sip-tester/g711a.pcap ]] || missing+=("g711a.pcap")
# and includes libbpf's helper definitions
[[ -f /usr/include/bpf/bpf_helpers.h ]] || missing+=("bpf_helpers.h")
# the store's tests start their own PostgreSQL server (the package's programs, not its service)
compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || missing+=("postgres")

if ((${#missing[@]})); then
  echo "missing: ${missing[*]}" >&2
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install as root on Debian: apt-get install -y sip-tester baresip sox tshark sqlite3 espeak-ng prometheus chromium chromium-driver sipvicious nftables iproute2 clang libbpf-dev postgresql kamailio" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends sip-tester baresip sox tshark sqlite3 espeak-ng prometheus \
    chromium chromium-driver sipvicious nftables iproute2 clang libbpf-dev postgresql kamailio
  # The tests start their own Prometheus and PostgreSQL; the packages' services are not wanted.
  if command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
    systemctl disable --now postgresql >/dev/null 2>&1 || true
    systemctl disable --now kamailio >/dev/null 2>&1 || true
  fi
fi

command -v cargo >/dev/null 2>&1 || { echo "cargo not found" >&2; exit 1; }

# The API schema test runs an OpenAPI validator and schemathesis from PyPI, kept in the
# repository's own .venv.
if [[ ! -x .venv/bin/schemathesis || ! -x .venv/bin/openapi-spec-validator ]]; then
  if ! python3 -m venv --help >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends python3 python3-venv python3-pip
  fi
  python3 -m venv .venv
  .venv/bin/pip install --quiet 'schemathesis==4.32.5' 'openapi-spec-validator==0.9.0'
fi

# The console's browser tests inject axe-core (accessibility checks) from npm, kept in
# the repository (tests/browser/node_modules), its npm cache too.
if [[ ! -f tests/browser/node_modules/axe-core/axe.min.js ]]; then
  if ! command -v npm >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends npm
  fi
  npm_config_cache="$PWD/.npm-cache" npm ci --prefix tests/browser --no-audit --no-fund
fi

echo "== SIPp scenario self-check (scenarios against each other, no server)"
bash tests/scenarios/selfcheck.sh

echo "== cargo test --all-targets --no-fail-fast"
cargo test --all-targets --no-fail-fast

echo "== the integration tests again, every server's store on PostgreSQL"
SWITCHBOARD_TEST_STORE=postgres cargo test --test '*' --no-fail-fast

echo "== fuzz smoke run (20,000 inputs per target; a longer run: scripts/fuzz.sh 1800)"
./scripts/fuzz.sh smoke
