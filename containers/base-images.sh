#!/usr/bin/env bash
# The base images of Dockerfile and compose.yaml, for a machine that cannot pull them.
#
#   containers/base-images.sh        (root: mmdebstrap and chroot; DOCKER= names the client)
#
# For each of python:3.11-slim and postgres:16-alpine: an image already there under that tag is
# kept (the real one, or a stand-in of this very script: the cache, keyed by the tag and the
# script's hash); else it is pulled; only when the pull fails is a stand-in built from Debian's
# packages (bookworm, mmdebstrap minbase) and tagged with the real name, so the Dockerfile and
# compose.yaml stay the files users run. The stand-ins are close enough for this project, not
# copies: Python 3.11.2 in a virtualenv at /usr/local (so `python` and `pip` are where the
# official image has them), and PostgreSQL 15 (not 16) behind an entrypoint that honours
# POSTGRES_USER, POSTGRES_PASSWORD and POSTGRES_DB (stopped by SIGTERM, a smart shutdown, where
# the official image sets STOPSIGNAL SIGINT: `docker import` cannot set it).
#
# The hooks below are single-quoted on purpose: mmdebstrap runs each with the tree as its $1.
# shellcheck disable=SC2016
set -euo pipefail

DOCKER=${DOCKER:-docker}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
HERE=$(cd "$(dirname "$0")" && pwd)
LABEL=org.pubsub-aggregator.stand-in
RECIPE=$(cat "$0" "$HERE/postgres-entrypoint.sh" | sha256sum | cut -c1-16)
SCRATCH=$(mktemp -d /var/tmp/base-images.XXXXXX)
trap 'rm -rf "$SCRATCH"' EXIT

say() { echo "base-images: $*"; }

# 0: a stand-in must be built for this tag; 1: the tag is there (kept or pulled).
wanted() {
    local tag=$1 recipe error
    if recipe=$("$DOCKER" image inspect -f "{{index .Config.Labels \"$LABEL\"}}" "$tag" 2>/dev/null)
    then
        if [[ $recipe == "$RECIPE" ]]; then
            say "$tag: the stand-in of this recipe is there ($RECIPE), kept"
            return 1
        elif [[ -z $recipe || $recipe == "<no value>" ]]; then
            say "$tag: there, kept"
            return 1
        fi
        say "$tag: a stand-in of another recipe ($recipe); rebuilding"
        return 0
    fi
    if error=$(timeout 300 "$DOCKER" pull -q "$tag" 2>&1); then
        say "$tag: pulled"
        return 1
    fi
    say "$tag: cannot be pulled (${error##*$'\n'}); building a stand-in from Debian's packages"
    return 0
}

# bootstrap TAG PACKAGES HOOK... INSTRUCTION...: a bookworm minbase with PACKAGES (mmdebstrap:
# apt downloads, dpkg installs, no documentation; merged /usr without the usrmerge package and its
# perl; /run kept, where postgres has its socket), each `customize` HOOK run on the tree (`$1`),
# imported as a one-layer image with those INSTRUCTIONs. Arguments starting "ENV ", "CMD " and
# so on are instructions; the others hooks.
bootstrap() {
    local tag=$1 packages=$2 hooks=() change=() previous log=$SCRATCH/${1//[:\/]/-}.log
    shift 2
    for argument in "$@" "LABEL $LABEL=$RECIPE"; do
        if [[ $argument =~ ^(ENV|CMD|ENTRYPOINT|USER|EXPOSE|VOLUME|WORKDIR|LABEL)\  ]]; then
            change+=(--change "$argument")
        else
            hooks+=(--customize-hook "$argument")
        fi
    done
    previous=$("$DOCKER" image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)
    if ! mmdebstrap --variant=minbase --include="$packages" --dpkgopt=force-unsafe-io \
        --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr --skip=cleanup/run \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' "${hooks[@]}" bookworm - "$MIRROR" \
        2>"$log" | "$DOCKER" import "${change[@]}" - "$tag" >/dev/null; then
        tail -n 20 "$log" >&2
        return 1
    fi
    # The stand-in of an older recipe, now untagged (kept if an image is built on it).
    if [[ -n $previous ]]; then "$DOCKER" image rm "$previous" >/dev/null 2>&1 || true; fi
    say "$tag: stand-in built ($(("$("$DOCKER" image inspect -f '{{.Size}}' "$tag")" / 1000000)) MB)"
}

SYSTEM_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
build_python=false build_postgres=false
wanted python:3.11-slim && build_python=true
wanted postgres:16-alpine && build_postgres=true
if [[ $build_python == true || $build_postgres == true ]]; then
    [[ $EUID -eq 0 ]] || { say "building a stand-in needs root (mmdebstrap, chroot)" >&2; exit 1; }
    command -v mmdebstrap >/dev/null || {
        apt-get update -qq && apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null
    }
fi
export HERE
# The two in parallel: dpkg runs its packages' scripts one at a time.
pids=()
if [[ $build_python == true ]]; then
    # This machine's extra certificate authorities (an egress proxy's, say): pip in the image
    # build goes out through the host's network. Then the official image's layout: python, pip
    # and installed scripts in /usr/local/bin (a virtualenv there).
    bootstrap python:3.11-slim python3,python3-venv,ca-certificates \
        'cp /usr/local/share/ca-certificates/*.crt "$1/usr/local/share/ca-certificates/" || true' \
        'chroot "$1" update-ca-certificates >/dev/null 2>&1' \
        'chroot "$1" python3 -m venv /usr/local' \
        'rm -f "$1"/usr/local/bin/Activate.ps1 "$1"/usr/local/bin/activate*' \
        "ENV PATH=$SYSTEM_PATH" "ENV LANG=C.UTF-8" 'CMD ["python3"]' &
    pids+=($!)
fi
if [[ $build_postgres == true ]]; then
    # The package made a cluster of its own; the entrypoint makes one in PGDATA on first start.
    bootstrap postgres:16-alpine postgresql-15 \
        'rm -rf "$1"/var/lib/postgresql/15 "$1"/etc/postgresql/15/main' \
        'chroot "$1" install -d -o postgres -g postgres -m 700 /var/lib/postgresql/data' \
        'chroot "$1" install -d -o postgres -g postgres -m 2775 /run/postgresql' \
        'install -m 755 "$HERE/postgres-entrypoint.sh" "$1/usr/local/bin/docker-entrypoint.sh"' \
        "ENV PATH=/usr/lib/postgresql/15/bin:$SYSTEM_PATH" "ENV LANG=C.UTF-8" \
        "ENV PGDATA=/var/lib/postgresql/data" "VOLUME /var/lib/postgresql/data" \
        "USER postgres" "EXPOSE 5432" 'ENTRYPOINT ["docker-entrypoint.sh"]' 'CMD ["postgres"]' &
    pids+=($!)
fi
for pid in "${pids[@]}"; do wait "$pid"; done
