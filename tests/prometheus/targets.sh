#!/usr/bin/env bash
# TEST INFRASTRUCTURE ONLY: replace the scrape targets of the `lfu-test` job of a Prometheus
# started by tests/prometheus/up.sh. No target arguments = no targets.
#
#   tests/prometheus/targets.sh <workdir> [host:port ...]
#
# Writes <workdir>/targets.json atomically (temporary file + rename in the same directory), as
# file_sd requires: Prometheus may read the file at any moment and must never see it half
# written. It picks the change up within about a second (file watch, refresh_interval 1s);
# the first sample of a new target follows at the next 1s scrape.
set -euo pipefail

die() { echo "targets.sh: $*" >&2; exit 1; }
[[ $# -ge 1 && -n $1 && -d $1 ]] || die "usage: $0 <workdir> [host:port ...]"
dir="$(cd "$1" && pwd -P)"
shift

json="" sep=""
for t in "$@"; do
  [[ $t =~ ^[^\"\\[:space:]]+:[0-9]+$ ]] || die "not a host:port target: '$t'"
  json+="$sep\"$t\""
  sep=", "
done
tmp="$(mktemp "$dir/.targets.json.XXXXXX")"
if [[ -n $json ]]; then
  printf '[{"targets": [%s], "labels": {}}]\n' "$json" >"$tmp"
else
  echo '[]' >"$tmp"
fi
chmod 644 "$tmp"
mv -f "$tmp" "$dir/targets.json"
