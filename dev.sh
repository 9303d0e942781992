#!/usr/bin/env bash
# podnet's one setup script. Idempotent; run as root on Debian 12.
#   bash dev.sh demo      set everything up, then run the netlab demo
#   bash dev.sh test      set everything up, then run the whole test suite
#   bash dev.sh setup     only install Debian packages and the Python environment
#   bash dev.sh image     build the podnet image offline (deploy/Containerfile) with podman
# Environment: PODNET_EDITABLE=1 installs the package editable (development);
# the default is a regular (non-editable) install, as CI does.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
VENV=${PODNET_VENV:-$ROOT/.venv}

DEB_PACKAGES=(
  iproute2 iptables conntrack ipset nftables kmod procps psmisc
  bind9-dnsutils dnsperf dnsmasq-base containernetworking-plugins
  python3-venv ca-certificates openssl
)
# Only for the tests and benchmarks: real CNI runtimes (a libcni driver built
# offline with Debian's Go and libcni; podman 4.3 with its CNI backend and runc),
# gcc for the C shims, mmdebstrap for the image test, iperf3 and sockperf for the
# overlay benchmark. Each test skips itself where these are missing.
DEB_TEST_PACKAGES=(
  golang-go golang-github-appc-cni-dev podman containerd runc busybox-static gcc libc6-dev
  mmdebstrap iperf3 sockperf
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

# ---- the image (deploy/Containerfile), built with no registry and no network inside the build:
# Debian bookworm root file systems from mmdebstrap (Debian's packages, apt's configured mirror),
# `podman import`ed as the two base images, then `podman build --isolation=chroot` (the default
# isolation fails on this machine). Chroot isolation runs RUN steps in the host's network
# namespace and creates nothing there (podman's default bridge network, which would write rules
# into the root namespace, is never used); no RUN step uses the network (pip --no-index, gcc).
# One mmdebstrap run makes the build base; the runtime base is that tarball with the build-only
# packages purged (apt autoremove, so exactly the runtime package set, the same files as an
# mmdebstrap run of the runtime list would give, without a second download and unpack). The base
# tarballs are kept in the image work dir and reused; delete them to refresh.
# Environment: PODNET_IMAGE (tag, default localhost/podnet:<version>), PODNET_IMAGE_DIR (work dir,
# default build/image), PODNET_IMAGE_STORE (a private podman store, default podman's own) and
# PODNET_IMAGE_RUNROOT (its runroot, a short path).
IMAGE_RUNTIME_DEBS=python3,iptables,ipset,conntrack,iproute2,kmod
IMAGE_BUILD_ONLY_DEBS=python3-venv,gcc,libc6-dev
IMAGE_BUILD_DEBS=$IMAGE_RUNTIME_DEBS,$IMAGE_BUILD_ONLY_DEBS

podman_cmd() {
  local args=(--runtime runc --cgroup-manager cgroupfs --events-backend file)
  if [ -n "${PODNET_IMAGE_STORE:-}" ]; then
    # a private store; the runroot path must stay short (podman limits socket path lengths)
    args+=(--root "$PODNET_IMAGE_STORE/root"
           --runroot "${PODNET_IMAGE_RUNROOT:-/tmp/pnimg-$(echo "$PODNET_IMAGE_STORE" | md5sum | cut -c1-8)}")
  fi
  podman "${args[@]}" "$@"
}

base_tarball() {  # $1 output, $2 package list
  [ -s "$1" ] && return 0
  echo "dev.sh: mmdebstrap $1 ($2)"
  # merged-usr hook: the /usr merge without the usrmerge package (and the full perl it pulls in)
  mmdebstrap --quiet --variant=apt --format=tar --include="$2" \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --aptopt='Apt::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    bookworm "$1.tmp" /etc/apt/sources.list.d/debian.sources
  mv "$1.tmp" "$1"
}

runtime_tarball() {  # $1 output, $2 the build base tarball
  [ -s "$1" ] && return 0
  if [ "$(id -u)" != 0 ]; then  # chroot needs root: make it from the package list instead
    base_tarball "$1" "$IMAGE_RUNTIME_DEBS"
    return 0
  fi
  echo "dev.sh: $1 ($2 without $IMAGE_BUILD_ONLY_DEBS)"
  local root="$1.root"
  rm -rf "$root" "$1.tmp"
  mkdir "$root"
  tar -C "$root" --numeric-owner -xf "$2"
  # purge, not remove, and autoremove ignoring Suggests/Recommends: no dependency or conffile
  # of a build-only package is left behind
  if ! chroot "$root" apt-get purge -y -qq --autoremove -o APT::AutoRemove::SuggestsImportant=false \
      -o APT::AutoRemove::RecommendsImportant=false ${IMAGE_BUILD_ONLY_DEBS//,/ } >"$root.log" 2>&1; then
    cat "$root.log" >&2
    exit 1
  fi
  rm -f "$root.log"
  # what mmdebstrap's final cleanup leaves out too: apt's caches and the package logs
  rm -rf "$root"/var/cache/apt/*.bin "$root"/var/cache/ldconfig/aux-cache "$root"/var/lib/apt/lists/auxfiles \
    "$root"/var/log/alternatives.log "$root"/var/log/dpkg.log "$root"/var/log/apt/*
  tar -C "$root" --numeric-owner -cf "$1.tmp" .
  rm -rf "$root"
  mv "$1.tmp" "$1"
}

build_image() {
  local dir=${PODNET_IMAGE_DIR:-$ROOT/build/image} version tag
  version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)
  tag=${PODNET_IMAGE:-localhost/podnet:$version}
  for tool in mmdebstrap podman runc gcc; do
    command -v "$tool" >/dev/null || { echo "dev.sh image: $tool is not installed (apt-get install $tool)" >&2; exit 1; }
  done
  [ -x "$VENV/bin/python" ] || setup_python  # builds the wheels
  mkdir -p "$dir"
  base_tarball "$dir/base-build.tar" "$IMAGE_BUILD_DEBS"
  runtime_tarball "$dir/base-runtime.tar" "$dir/base-build.tar"
  podman_cmd import --quiet "$dir/base-runtime.tar" localhost/podnet-base:bookworm >/dev/null
  podman_cmd import --quiet "$dir/base-build.tar" localhost/podnet-build-base:bookworm >/dev/null
  # the build context: the C shim and wheels of podnet and its runtime dependencies, built here
  # by pip (from its configured index or cache; the podman build itself never downloads)
  rm -rf "$dir/context"
  mkdir -p "$dir/context/wheels"
  cp cni/shim.c "$dir/context/"
  "$VENV/bin/python" -m pip wheel -q --wheel-dir "$dir/context/wheels" "$ROOT" 2>&1 | grep -v "^WARNING: Location" || true
  ls "$dir/context/wheels"/podnet-*.whl >/dev/null
  podman_cmd build --quiet --pull=never --isolation=chroot \
    --ulimit nofile=20000:20000 --ulimit nproc=4096:4096 \
    -f "$ROOT/deploy/Containerfile" -t "$tag" "$dir/context" >/dev/null
  echo "dev.sh: built $tag ($(podman_cmd image inspect --format '{{.Size}}' "$tag") bytes)"
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
    exec "$VENV/bin/pytest" --durations=30 "$@"
    ;;
  image)
    build_image
    ;;
  *)
    sed -n '2,10p' "$0"
    exit 2
    ;;
esac
