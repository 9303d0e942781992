#!/usr/bin/env bash
# podnet's one setup script. Idempotent; run as root on Debian 12.
#   bash dev.sh demo      set everything up, then run the netlab demo
#   bash dev.sh test      set everything up, then run the whole test suite
#   bash dev.sh setup     only install Debian packages and the Python environment
# Environment: PODNET_EDITABLE=1 installs the package editable (development);
# the default is a regular (non-editable) install, as CI does.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
VENV=${PODNET_VENV:-$ROOT/.venv}

DEB_PACKAGES=(
  iproute2 iptables conntrack ipset nftables kmod procps psmisc
  bind9-dnsutils dnsperf dnsmasq-base containernetworking-plugins
  python3-venv ca-certificates
)
# Only for the tests: real CNI runtimes (a libcni driver built offline with
# Debian's Go and libcni; podman 4.3 with its CNI backend and runc) and gcc
# for the optional C shim. Each test skips itself where these are missing.
DEB_TEST_PACKAGES=(
  golang-go golang-github-appc-cni-dev podman containerd runc busybox-static gcc libc6-dev
)

need_debs() {
  local missing=() want=("${DEB_PACKAGES[@]}")
  [ "${PODNET_TEST_DEBS:-0}" = 1 ] && want+=("${DEB_TEST_PACKAGES[@]}")
  for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  # kubectl: use the one already on the machine; Debian's kubernetes-client
  # would fight a packaged kubectl over /usr/bin/kubectl.
  command -v kubectl >/dev/null 2>&1 || missing+=(kubernetes-client)
  printf '%s\n' "${missing[@]}"
}

setup_debian() {
  local missing
  missing=$(need_debs)
  if [ -n "$missing" ]; then
    echo "dev.sh: installing Debian packages: $(echo $missing)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
}

setup_python() {
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  if [ "${PODNET_EDITABLE:-0}" = 1 ]; then
    "$VENV/bin/python" -m pip install -q -e ".[test]"
  else
    "$VENV/bin/python" -m pip install -q --force-reinstall --no-deps . && \
    "$VENV/bin/python" -m pip install -q ".[test]"
  fi
  # CLIs that must start fast (the CNI shim) need bytecode on disk:
  # this machine's python3 sets PYTHONDONTWRITEBYTECODE.
  "$VENV/bin/python" -m compileall -q "$("$VENV/bin/python" -c 'import sysconfig;print(sysconfig.get_paths()["purelib"])')/podnet" >/dev/null || true
}

setup() {
  if [ "$(id -u)" != 0 ]; then
    echo "dev.sh: run as root (network namespaces, iptables)" >&2
    exit 1
  fi
  setup_debian
  setup_python
}

cmd=${1:-help}
shift || true
case "$cmd" in
  setup) setup ;;
  demo)
    setup
    exec "$VENV/bin/podnet" lab demo "$@"
    ;;
  test)
    PODNET_TEST_DEBS=1 setup
    # The pytest console script never puts the checkout root on sys.path,
    # so our dns/ folder cannot shadow dnspython's dns (never `python -m pytest`).
    exec "$VENV/bin/pytest" "$@"
    ;;
  *)
    sed -n '2,9p' "$0"
    exit 2
    ;;
esac
