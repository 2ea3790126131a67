#!/usr/bin/env bash
# apt-get for the test scripts' installs, non-interactive, that waits while another package
# manager holds apt's or dpkg's lock (unattended-upgrades on a fresh machine, a person's apt)
# instead of failing: it says so every 10 s and tries again, for LFU_APT_WAIT seconds (900).
set -uo pipefail
limit="${LFU_APT_WAIT:-900}"
waited=0
err="$(mktemp /tmp/lfu-apt.XXXXXX)"
trap 'rm -f "$err"' EXIT
while :; do
  DEBIAN_FRONTEND=noninteractive apt-get "$@" 2>"$err"
  rc=$?
  if ((rc == 0)); then
    cat "$err" >&2
    exit 0
  fi
  if grep -qE "Could not get lock|Unable to acquire the dpkg frontend lock|Unable to lock (the )?(administration )?directory" "$err" && ((waited < limit)); then
    holder="$(grep -oE "held by process [0-9]+ \([^)]*\)" "$err" | head -1)"
    echo "apt-get $1: another package manager holds the lock${holder:+ ($holder)}; waiting (${waited}s of ${limit}s)" >&2
    sleep 10
    waited=$((waited + 10))
    continue
  fi
  cat "$err" >&2
  exit "$rc"
done
