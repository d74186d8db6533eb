#!/usr/bin/env bash
# Installs node-oidc-provider for the side-by-side load harness
# (benches/side_by_side.rs) exactly as package-lock.json says. Idempotent and
# quick when already done; safe to run concurrently.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec "$here/../../tests/npm-ci.sh" "$here"
