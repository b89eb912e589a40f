#!/bin/sh
# The stand-in for postgres:16-alpine's entrypoint (containers/base-images.sh): the part of the
# official one that compose.yaml relies on. On the first start with an empty PGDATA: a cluster
# whose superuser is POSTGRES_USER with POSTGRES_PASSWORD (scram-sha-256 over the network, trust
# on the socket inside the container), and the database POSTGRES_DB. Then the server, as PID 1.
set -eu

if [ "${1:-}" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
    : "${POSTGRES_PASSWORD:?must be set: it is the password of POSTGRES_USER}"
    user=${POSTGRES_USER:-postgres}
    database=${POSTGRES_DB:-$user}
    password_file=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$password_file"
    initdb --username="$user" --pwfile="$password_file" --encoding=UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$password_file"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
    if [ "$database" != postgres ]; then
        # Socket only, so nobody connects before the database exists.
        pg_ctl --wait --silent --options="-c listen_addresses=''" start
        createdb --username="$user" --owner="$user" "$database"
        pg_ctl --wait --silent --mode=fast stop
    fi
fi
exec "$@"
