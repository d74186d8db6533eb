#!/usr/bin/env bash
# Installs the Python tools the end-to-end tests read Gatehouse's output
# with (requirements.txt: prometheus-client, opentelemetry-proto) into
# tests/python/.venv.
# Idempotent and quick when already done (a stamp holds the requirements'
# hash); safe to run concurrently. Environment: PYTHON (default: python3).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

venv=.venv
stamp="$venv/.gatehouse-setup"
want="$(sha256sum requirements.txt | cut -d' ' -f1)"
installed() { [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; }

installed && exit 0

if command -v flock >/dev/null 2>&1; then
  exec 9>.setup.lock
  flock 9
  installed && exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements.txt
echo "$want" >"$stamp"
