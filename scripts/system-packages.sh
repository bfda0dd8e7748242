#!/usr/bin/env bash
# The system packages the integration tests drive: Debian's Chromium (the UI test, through Playwright, never a
# browser download) and PostgreSQL (the production instance test). Installed with apt when missing and allowed
# (root, or passwordless sudo); otherwise a line says which tests will skip and how to install them.
set -euo pipefail

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
[ ${#missing[@]} -eq 0 ] && exit 0

as_root=()
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
  else
    as_root=(none)
  fi
fi
if ! command -v apt-get >/dev/null || [ "${as_root[*]}" = none ]; then
  echo "not installed: ${missing[*]} (the browser and Postgres tests will skip); apt-get install ${missing[*]}" >&2
  exit 0
fi
echo "installing ${missing[*]} with apt-get"
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
