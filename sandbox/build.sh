#!/usr/bin/env bash
# Build the gpenguard sandbox image offline.
#
#   sandbox/build.sh                 CPU image on a debootstrap'd Debian bookworm base
#   BASE=pytorch/pytorch:2.13.0-cuda12.8-cudnn9-runtime PYVER=3.11 sandbox/build.sh
#                                    GPU image (tag gpenguard-sandbox:gpu) on a CUDA PyTorch
#                                    base you pulled beforehand; PYVER = that base's Python
#
# Nothing is fetched from a container registry. The base is made with debootstrap from the
# Debian mirror apt already uses; Python packages are `pip download`ed on this host for the
# image's Python (cp311, manylinux x86_64) into sandbox/build/wheels (cached between runs)
# and installed with `pip install --no-index`. Prints the image id (sha256:...) last.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
build="${GPENGUARD_SANDBOX_BUILD_DIR:-$here/build}"
base="${BASE:-gpenguard-base:bookworm}"
if [ "$base" = "gpenguard-base:bookworm" ]; then
  tag="${GPENGUARD_IMAGE:-gpenguard-sandbox:latest}"
else
  tag="${GPENGUARD_IMAGE:-gpenguard-sandbox:gpu}"   # run with: gpenguard restore --image gpenguard-sandbox:gpu --gpu 0
fi
# The Python of the image, for `pip download` (bookworm: 3.11; set PYVER for another base).
pyver="${PYVER:-3.11}"
python="${PYTHON:-python3}"
log() { printf '[build] %s\n' "$*" >&2; }

# Without a reachable engine every later step is wasted (or worse: `docker image inspect`
# failing would read as "no base image" and start a debootstrap), so ask it first.
if ! docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
  log "cannot reach the Docker engine${DOCKER_HOST:+ at $DOCKER_HOST}; start dockerd (or set DOCKER_HOST) and retry"
  exit 1
fi
mkdir -p "$build"

mirror() {
  # The first Debian mirror apt is configured with (deb822 or one-line sources).
  local m
  m=$(grep -rhoE '^URIs: *\S+/debian/?$' /etc/apt/sources.list.d/ 2>/dev/null | head -n1 | awk '{print $2}') || true
  if [ -z "$m" ]; then
    m=$(grep -rhoE '^deb +(\[[^]]*\] +)?\S+/debian/? ' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
        | head -n1 | awk '{print $NF}') || true
  fi
  echo "${m:-http://deb.debian.org/debian}"
}

if [ "$base" = "gpenguard-base:bookworm" ] && ! docker image inspect "$base" >/dev/null 2>&1; then
  tarball="$build/base-bookworm.tar"
  if [ ! -s "$tarball" ]; then
    rootfs="$build/rootfs"
    rm -rf "$rootfs"
    log "debootstrap bookworm from $(mirror)"
    debootstrap --variant=minbase --include=python3,python3-venv bookworm "$rootfs" "$(mirror)" >"$build/debootstrap.log" 2>&1 \
      || { tail -n 20 "$build/debootstrap.log" >&2; exit 1; }
    # Package manager state, docs and locales are never used inside the sandbox.
    rm -rf "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc \
           "$rootfs"/usr/share/man "$rootfs"/usr/share/info "$rootfs"/usr/share/locale
    tar -C "$rootfs" --numeric-owner -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
  fi
  log "import $tarball as $base"
  docker import "$tarball" "$base" >/dev/null
fi

ctx="$build/context"
rm -rf "$ctx"
mkdir -p "$ctx/wheels" "$ctx/gpenguard-wheel" "$build/wheels"
cp "$here/Dockerfile" "$ctx/Dockerfile"

if [ "$base" = "gpenguard-base:bookworm" ]; then
  reqs="torch==2.13.0 numpy safetensors pillow"
  venv_flags=""
else
  # The CUDA base brings torch and numpy; add only what it lacks.
  reqs="safetensors pillow"
  venv_flags="--system-site-packages"
fi
printf '%s\n' $reqs >"$build/wheels/requirements.txt"
log "pip download ($reqs) for cp${pyver/./} manylinux x86_64"
"$python" -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
  --implementation cp --python-version "$pyver" --platform manylinux_2_28_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$build/wheels" -r "$build/wheels/requirements.txt"
# Hard links keep the build context cheap to assemble.
cp -al "$build"/wheels/. "$ctx/wheels/"

log "build the gpenguard wheel"
# setuptools reuses build/lib; a stale copy of a deleted module must not reach the image.
rm -rf "$root/build/lib" "$root"/build/bdist.*
"$python" -m pip wheel --quiet --disable-pip-version-check --no-deps --no-build-isolation \
  -w "$ctx/gpenguard-wheel" "$root" >/dev/null

log "docker build $tag (BASE=$base)"
docker build --quiet --force-rm --build-arg "BASE=$base" --build-arg "VENV_FLAGS=$venv_flags" -t "$tag" "$ctx" >/dev/null
docker image inspect --format '{{.Id}}' "$tag"
