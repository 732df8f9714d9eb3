#!/bin/bash
# Issues each platform service its own InfluxDB API token with the least it needs, and
# writes it where only that service reads it:
#
#   ingest    read and write the KPI bucket  /run/tokens/ingest/token    (ingest.toml)
#   grafana   read the KPI bucket            /run/tokens/grafana/token   (the dashboards)
#   telegraf  write the KPI bucket           /run/tokens/telegraf/token  (profile telegraf)
#
# The ingest reads as well: before it rewrites a record it reads the stored point, so that
# a less complete record never replaces it and no field of the older version survives.
# No token may touch another bucket, the organisation, users or other tokens.
#
# The influxdb image runs it once, right after its first setup (the influx CLI is then
# configured with the admin token). Run it again by hand to replace a token whose file was
# deleted (rotation: delete the file, run this, restart that service):
#   docker compose exec influxdb /docker-entrypoint-initdb.d/10-service-tokens.sh
# A token whose file exists and that InfluxDB still knows is kept. InfluxDB 2 generates
# token values itself (its API takes none), hence the files.
set -euo pipefail
trap 'echo "10-service-tokens: failed (line $LINENO): $BASH_COMMAND" >&2' ERR

org="${DOCKER_INFLUXDB_INIT_ORG:?DOCKER_INFLUXDB_INIT_ORG is not set}"
bucket="${DOCKER_INFLUXDB_INIT_BUCKET:?DOCKER_INFLUXDB_INIT_BUCKET is not set}"
user="${DOCKER_INFLUXDB_INIT_USERNAME:?DOCKER_INFLUXDB_INIT_USERNAME is not set}"
tokens_dir="${SERVICE_TOKENS_DIR:-/run/tokens}"

# The CLI's table output is tab-separated; --hide-headers leaves the rows.
bucket_id="$(influx bucket list --org "$org" --name "$bucket" --hide-headers | cut -f 1)"
if [[ -z "$bucket_id" ]]; then
    echo "10-service-tokens: bucket \"$bucket\" not found in organisation \"$org\"" >&2
    exit 1
fi

# issue NAME DESCRIPTION PERMISSION-FLAG...
issue() {
    local name=$1 description=$2
    shift 2
    local dir="$tokens_dir/$name" token id known created
    # Columns of auth list and auth create: ID, Description, Token, User Name, ...
    known="$(influx auth list --org "$org" --hide-headers | cut -f 1)"
    if [[ -s "$dir/token" && -s "$dir/id" ]] && grep -qxF "$(cat "$dir/id")" <<<"$known"; then
        echo "10-service-tokens: $name: token exists, kept"
        return
    fi
    # Tokens issued to this service before (their file is gone) stop working.
    influx auth list --org "$org" --hide-headers \
        | awk -F '\t' -v d="$description" '$2 == d { print $1 }' \
        | while read -r old; do influx auth delete --id "$old" >/dev/null; done
    created="$(influx auth create --org "$org" --user "$user" --description "$description" \
        "$@" --hide-headers)"
    id="$(cut -f 1 <<<"$created")"
    token="$(cut -f 3 <<<"$created")"
    if [[ -z "$id" || -z "$token" ]]; then
        echo "10-service-tokens: $name: no token in the answer of influx auth create" >&2
        exit 1
    fi
    mkdir -p "$dir"
    # Readable by the service's own user (each volume is mounted by InfluxDB and that
    # service only); written aside and renamed, so a reader never sees half a token. The
    # id tells a later run whether this token still exists (a failed first setup starts
    # InfluxDB afresh, but the volumes stay).
    (umask 0222 && printf '%s\n' "$token" >"$dir/token.new" && printf '%s\n' "$id" >"$dir/id.new")
    mv -f "$dir/id.new" "$dir/id"
    mv -f "$dir/token.new" "$dir/token"
    echo "10-service-tokens: $name: token issued ($description)"
}

issue ingest "factory-platform ingest: read and write $bucket" \
    --read-bucket "$bucket_id" --write-bucket "$bucket_id"
issue grafana "factory-platform grafana: read $bucket" --read-bucket "$bucket_id"
issue telegraf "factory-platform telegraf: write $bucket" --write-bucket "$bucket_id"
