#!/usr/bin/env bash
# Builds the streamtrain image with buildah, without a container registry:
#
#   docker/build.sh [--base IMAGE] [--tag TAG]
#
# Without --base, the base is made from Debian packages: `debootstrap --variant=minbase` of
# Debian 12 with docker/base-packages.txt, saved as a tarball under var/docker/base/ whose name is
# the hash of suite, mirror and package list (made once, reused until the list changes), then
# imported as image streamtrain-base:<hash>. The Python packages come from a wheelhouse made with
# this machine's pip (its cache and indexes) and bind-mounted into the build, so nothing is
# downloaded twice. Root only (debootstrap, and buildah's chroot isolation here).
#
# Settings (environment):
#   STREAMTRAIN_BUILDAH_ROOT  buildah storage (default var/docker/storage; --root/--runroot)
#   STREAMTRAIN_WHEELHOUSE    wheelhouse folder (default var/docker/wheelhouse)
#   DEBIAN_MIRROR             debootstrap mirror (default http://deb.debian.org/debian)
# Prints the image's name last.
set -euo pipefail
cd "$(dirname "$0")/.."

base=""
tag="localhost/streamtrain:latest"
while [ $# -gt 0 ]; do
  case "$1" in
    --base) base="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    *) echo "build.sh: unknown argument $1 (use --base IMAGE, --tag TAG)" >&2; exit 2 ;;
  esac
done

[ "$(id -u)" = 0 ] || { echo "build.sh: needs root (debootstrap, buildah --isolation chroot)" >&2; exit 1; }
for tool in buildah debootstrap; do
  command -v "$tool" >/dev/null || { echo "build.sh: $tool not found; run make setup" >&2; exit 1; }
done
[ -x .venv/bin/pip ] || { echo "build.sh: .venv missing; run make setup" >&2; exit 1; }

storage="${STREAMTRAIN_BUILDAH_ROOT:-var/docker/storage}"
wheelhouse="${STREAMTRAIN_WHEELHOUSE:-var/docker/wheelhouse}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
suite=bookworm
mkdir -p "$storage" "$wheelhouse" var/docker/base
storage="$(cd "$storage" && pwd)"
wheelhouse="$(cd "$wheelhouse" && pwd)"
bh() { buildah --root "$storage/root" --runroot "$storage/run" --storage-driver vfs "$@"; }

packages() { grep -v -e '^#' -e '^$' docker/base-packages.txt | paste -sd, -; }

# The debootstrap base, once per (suite, mirror, package list).
make_base() {
  local key tarball rootfs
  key="$(printf '%s\n' "$suite" "$mirror" "$(packages)" | sha256sum | cut -c1-12)"
  tarball="var/docker/base/debian-$suite-minbase-$key.tar"
  base="localhost/streamtrain-base:$key"
  if [ ! -s "$tarball" ]; then
    rootfs="$(mktemp -d var/docker/base/rootfs.XXXXXX)"
    echo "build.sh: debootstrap $suite ($(packages)) into $rootfs" >&2
    debootstrap --variant=minbase --include="$(packages)" "$suite" "$rootfs" "$mirror" >&2
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar --numeric-owner -C "$rootfs" -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
  fi
  if ! bh inspect --type image "$base" >/dev/null 2>&1; then
    echo "build.sh: importing $tarball as $base" >&2
    local ctr
    ctr="$(bh from scratch)"
    bh add "$ctr" "$tarball" / >&2
    bh config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      --env LANG=C.UTF-8 --cmd /bin/bash "$ctr"
    bh commit --quiet --rm "$ctr" "$base" >&2
  fi
}

# Wheels of the project's runtime requirements at the versions of this machine's venv; the
# versions go into the wheelhouse too, so the image installs exactly those (older wheels may lie
# beside them from earlier builds).
make_wheelhouse() {
  local requirements constraints="$wheelhouse/constraints.txt"
  requirements="$(mktemp)"
  .venv/bin/python - >"$requirements" <<'EOF'
import configparser
cfg = configparser.ConfigParser()
cfg.read("setup.cfg")
print(cfg["options"]["install_requires"].strip())
print("\n".join(line for line in open("docker/requirements-image.txt")
                if line.strip() and not line.startswith("#")))
EOF
  .venv/bin/pip freeze --exclude-editable >"$constraints"
  echo "build.sh: pip wheel into $wheelhouse" >&2
  .venv/bin/pip wheel -q --wheel-dir "$wheelhouse" -c "$constraints" -r "$requirements" >&2
  rm -f "$requirements"
}

[ -n "$base" ] || make_base
make_wheelhouse
echo "build.sh: buildah bud --build-arg BASE=$base -t $tag" >&2
bh bud --isolation chroot --pull=never --build-arg "BASE=$base" --volume "$wheelhouse:/wheelhouse:ro" \
  -f docker/Dockerfile -t "$tag" . >&2
echo "$tag"
