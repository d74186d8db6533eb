#!/usr/bin/env bash
# Installs the test OpenID Connect provider (oidc-provider, tests/upstream)
# exactly as package-lock.json says. Idempotent and quick when already done;
# safe to run concurrently.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec "$here/../npm-ci.sh" "$here"
