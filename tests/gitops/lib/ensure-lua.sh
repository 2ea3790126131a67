# shellcheck shell=bash
# Sourced by tests/gitops/*.sh: installs Debian's lua5.1 when it is missing (apt, as root or
# through sudo). The tests need a real Lua 5.1, the language version of Argo CD's gopher-lua.
if ! command -v lua5.1 >/dev/null 2>&1; then
  echo "installing lua5.1 (apt)" >&2
  sudo_cmd=()
  [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
  apt_get="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/apt-get.sh"
  if ! "${sudo_cmd[@]}" "$apt_get" install -y --no-install-recommends lua5.1 >/dev/null 2>&1; then
    "${sudo_cmd[@]}" "$apt_get" update >/dev/null
    "${sudo_cmd[@]}" "$apt_get" install -y --no-install-recommends lua5.1 >/dev/null
  fi
fi
