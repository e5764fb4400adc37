#!/usr/bin/env bash
# A Debian bookworm base image made from Debian's packages (debootstrap), for a Docker engine that
# reaches the package mirrors but no image registry:
#   infra/docker/debian-base.sh [TAG]        (default TAG: local/debian:bookworm)
# Installs docker.io and debootstrap when they are missing and starts dockerd when it is not
# running (both need root). Does nothing when the image exists.
set -euo pipefail
tag="${1:-local/debian:bookworm}"
export DEBIAN_FRONTEND=noninteractive
if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
  apt-get update -qq && apt-get install -y -qq docker.io debootstrap >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
  (nohup dockerd >/tmp/dockerd.log 2>&1 &)
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start: /tmp/dockerd.log" >&2; exit 1; }
fi
if docker image inspect "$tag" >/dev/null 2>&1; then exit 0; fi
# the mirror this machine's apt already uses (deb822 sources first, then sources.list)
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
[[ -n $mirror ]] || mirror=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
[[ -n $mirror ]] || mirror=http://deb.debian.org/debian
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
if ! debootstrap --variant=minbase bookworm "$root" "$mirror" >/tmp/debootstrap.log 2>&1; then
  tail -5 /tmp/debootstrap.log >&2
  exit 1
fi
tar -C "$root" -c . | docker import - "$tag" >/dev/null
echo "built $tag"
