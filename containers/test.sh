#!/usr/bin/env bash
# make test-containers: the compose story with real containers (tests/containers).
#
# Sets up what is missing where it may (as root): Debian's docker.io and docker-compose, a dockerd
# in the background, the base images (containers/base-images.sh); then builds the image with
# compose under a tag of this run's own and runs the tests. Where no engine can be had it says why
# in one line and exits 0, except in CI as root: there that is a failure, so a skipped story can
# never pass for a green one. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}

say() { echo "test-containers: $*"; }
skip() {
    if [[ ${CI:-} == true && $EUID -eq 0 ]]; then
        say "FAILED: no container engine in CI, although root could start one: $*" >&2
        exit 1
    fi
    say "skipped: $*"
    exit 0
}
now() { date +%s.%N; }
since() { awk -v start="$1" -v end="$(now)" 'BEGIN { printf "%.1f s", end - start }'; }

# Debian's docker.io client (20.10) has BuildKit built in. A newer client (23 and later) builds
# with BuildKit only through the buildx plugin; without it every build fails with "BuildKit is
# enabled but the buildx component is missing".
debian_client() { dpkg -L docker.io 2>/dev/null | grep -m1 '/bin/docker$' || true; }
builds_with_buildkit() {
    "$1" buildx version >/dev/null 2>&1 && return 0
    local version
    version=$("$1" version --format '{{.Client.Version}}' 2>/dev/null || true)
    [[ $version =~ ^([0-9]+)\. ]] && ((BASH_REMATCH[1] < 23))
}

if [[ -z $(debian_client) ]] || ! command -v docker-compose >/dev/null; then
    if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null; then
        say "installing Debian's docker.io and docker-compose"
        { apt-get update -qq && apt-get install -y -qq --no-install-recommends \
            docker.io docker-compose >/dev/null; } || skip "apt-get install docker.io failed"
    fi
fi
client=$(debian_client)
client=${client:-$(command -v docker || true)}
[[ -n $client ]] || skip "no docker client, and only root can install one (apt-get install docker.io)"
command -v docker-compose >/dev/null ||
    skip "no docker-compose (Debian's package; \`docker compose\` v2 is untested here)"
builds_with_buildkit "$client" ||
    skip "$client has no buildx plugin, and BuildKit needs it from Docker 23 on (docs/containers.md)"
first=$(command -v docker || true)
if [[ -n $first && $first != "$client" ]] && ! builds_with_buildkit "$first"; then
    say "note: $first, first on PATH, has no buildx (BuildKit builds fail with it); using $client"
fi

# `docker version` says in one line why no engine answers: none there, or one this user may not use.
if ! problem=$("$client" version --format '{{.Server.Version}}' 2>&1 >/dev/null); then
    problem=${problem##*$'\n'}
    [[ $problem != *"permission denied"* ]] ||
        skip "an engine runs, but this user may not use it ($problem): join the docker group or run as root"
    dockerd=$(command -v dockerd || echo /usr/sbin/dockerd)
    [[ $EUID -eq 0 && -x $dockerd ]] ||
        skip "no engine answers ($problem), and only root can start dockerd"
    say "starting $dockerd in the background (log: /var/log/dockerd.log)"
    setsid "$dockerd" >>/var/log/dockerd.log 2>&1 </dev/null &
    began=$(now) deadline=$((SECONDS + 60))
    until "$client" info >/dev/null 2>&1; do  # a poll with a deadline: dockerd has no ready signal
        kill -0 $! 2>/dev/null || skip "dockerd exited: $(tail -n 1 /var/log/dockerd.log)"
        ((SECONDS < deadline)) || skip "dockerd did not answer within 60 s"
        sleep 0.2
    done
    say "engine up in $(since "$began")"
fi

# compose builds through the `docker` first on PATH: make it the client chosen above.
bin=$(mktemp -d)
IMAGE_TAG=aggtest-$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')
# Each story's compose project is named "$IMAGE_TAG-<random>" (tests/containers/engine.py). A story
# removes its own at the end, but not when pytest is killed (a CI timeout's SIGTERM): then its
# containers (the aggregator with `restart: unless-stopped`, back after every engine restart),
# volumes and networks would stay. They go with the run, whatever ends it but SIGKILL.
ours() {  # ours container|volume|network: the names of this run's objects of that kind
    local list=("$1" ls) name=.Name
    [[ $1 != container ]] || list=(ps -a) name=.Names
    "$client" "${list[@]}" --filter label=com.docker.compose.project \
        --format "{{$name}}{{\"\t\"}}{{.Label \"com.docker.compose.project\"}}" 2>/dev/null |
        awk -F '\t' -v prefix="$IMAGE_TAG-" 'index($2, prefix) == 1 { print $1 }'
}
cleanup() {
    local kind ids
    for kind in container volume network; do
        mapfile -t ids < <(ours "$kind")
        if ((${#ids[@]})); then
            say "removing ${#ids[@]} ${kind}(s) a killed story left behind"
            if [[ $kind == container ]]; then
                "$client" rm -f -v "${ids[@]}" >/dev/null || true
            else
                "$client" "$kind" rm "${ids[@]}" >/dev/null || true
            fi
        fi
    done
    "$client" image rm "pubsub-aggregator:$IMAGE_TAG" >/dev/null 2>&1 || true
    rm -rf "$bin"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
ln -s "$client" "$bin/docker"
export PATH="$bin:$PATH" DOCKER=$client IMAGE_TAG DOCKER_BUILDKIT=1 COMPOSE_DOCKER_CLI_BUILD=1

began=$(now)
DOCKER=$client bash containers/base-images.sh || skip "the base images could not be pulled or built"
say "base images ready in $(since "$began")"

began=$(now)
log=$(mktemp)
if ! docker-compose -f compose.yaml -p "$IMAGE_TAG" build aggregator >"$log" 2>&1; then
    cat "$log"
    rm -f "$log"
    say "FAILED: the image did not build" >&2
    exit 1
fi
rm -f "$log"
size=$("$client" image inspect -f '{{.Size}}' "pubsub-aggregator:$IMAGE_TAG")
say "image pubsub-aggregator:$IMAGE_TAG built in $(since "$began"), $((size / 1000000)) MB"

"$PYTHON" -m pytest -v -p no:cacheprovider tests/containers "$@"
