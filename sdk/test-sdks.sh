#!/usr/bin/env bash
# Builds and tests the verifier SDKs (sdk/python and sdk/typescript).
# Runnable from any directory; idempotent (reuses the venv and node_modules).
#
#   sdk/test-sdks.sh            # both
#   sdk/test-sdks.sh python     # only one of them
#   sdk/test-sdks.sh typescript
#
# SDK_INSTALL_ONLY=1 installs and builds without running the tests.
# Environment: PYTHON (default: python3.11, else python3), NPM (default: npm).
set -euo pipefail

SDK_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd -- "$SDK_DIR/.." && pwd)"
PY_DIR="$SDK_DIR/python"
TS_DIR="$SDK_DIR/typescript"
VENV="$PY_DIR/.venv"
NPM="${NPM:-npm}"

which="${1:-all}"
case "$which" in
  all | python | typescript) ;;
  *) echo "usage: $0 [all|python|typescript]" >&2; exit 2 ;;
esac

failed=()

# Installs are skipped when the manifest has not changed since the last
# successful install (set SDK_FORCE_INSTALL=1 to reinstall anyway).
stamp_of() { sha256sum "$1" | cut -d' ' -f1; }
needs_install() { # manifest stamp-file
  [[ "${SDK_FORCE_INSTALL:-0}" == 1 || ! -f "$2" || "$(cat "$2")" != "$(stamp_of "$1")" ]]
}

run_python() {
  local py="${PYTHON:-}"
  if [[ -z "$py" ]]; then
    if command -v python3.11 >/dev/null 2>&1; then py=python3.11; else py=python3; fi
  fi
  echo "==> Python SDK"
  if [[ ! -x "$VENV/bin/python" ]]; then
    "$py" -m venv "$VENV" || return 1
  fi
  local stamp="$VENV/.gatehouse-install-stamp"
  if needs_install "$PY_DIR/pyproject.toml" "$stamp"; then
    # The path is relative to the repository root, so install from there.
    (cd "$REPO_DIR" && "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e 'sdk/python[mcp,test]') || return 1
    stamp_of "$PY_DIR/pyproject.toml" >"$stamp"
  fi
  [[ "${SDK_INSTALL_ONLY:-0}" == 1 ]] && return 0
  (cd "$PY_DIR" && "$VENV/bin/python" -m pytest -q -p no:cacheprovider) || return 1
  # The benchmarks, each function once (sdk/bench-sdks.sh measures them).
  (cd "$PY_DIR" && "$VENV/bin/python" -m pytest -q -p no:cacheprovider benchmarks --benchmark-disable) || return 1
}

run_typescript() {
  echo "==> TypeScript SDK (node $(node --version))"
  local stamp="$TS_DIR/node_modules/.gatehouse-install-stamp"
  if [[ ! -d "$TS_DIR/node_modules" ]] || needs_install "$TS_DIR/package-lock.json" "$stamp"; then
    (cd "$TS_DIR" && "$NPM" ci --no-audit --no-fund --loglevel=error) || return 1
    stamp_of "$TS_DIR/package-lock.json" >"$stamp"
  fi
  if [[ "${SDK_INSTALL_ONLY:-0}" == 1 ]]; then
    (cd "$TS_DIR" && "$NPM" run --silent build) || return 1
    return 0
  fi
  (cd "$TS_DIR" && "$NPM" test) || return 1
  # The benchmark, briefly (sdk/bench-sdks.sh measures it).
  (cd "$TS_DIR" && BENCH_TIME_MS=50 node bench/verify.bench.mjs >/dev/null) || return 1
}

if [[ "$which" == all || "$which" == python ]]; then
  run_python || failed+=(python)
fi
if [[ "$which" == all || "$which" == typescript ]]; then
  run_typescript || failed+=(typescript)
fi

if ((${#failed[@]})); then
  echo "FAILED: ${failed[*]}" >&2
  exit 1
fi
if [[ "${SDK_INSTALL_ONLY:-0}" == 1 ]]; then echo "SDKs installed"; else echo "SDK tests passed"; fi
