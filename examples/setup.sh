#!/usr/bin/env bash
# Installs what the example MCP servers and the MCP client end-to-end tests
# (tests/mcp_clients.rs) need. Runnable from any directory; idempotent.
#
#   examples/setup.sh
#   cargo test --test mcp_clients
#
# * the verifier SDKs, through sdk/test-sdks.sh (the Python venv at
#   sdk/python/.venv with gatehouse-verify[mcp], which is all the Python
#   example needs, and the TypeScript SDK's dist/, which the TypeScript
#   example installs);
# * examples/typescript-mcp-server: npm ci, then its build (dist/server.js);
# * tests/mcp-e2e: npm ci (the official MCP TypeScript SDK clients).
#
# The Rust example is a workspace member: cargo builds it.
# Environment: NPM (default: npm); PYTHON is passed on to sdk/test-sdks.sh.
set -euo pipefail

EXAMPLES_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd -- "$EXAMPLES_DIR/.." && pwd)"
NPM="${NPM:-npm}"

echo "==> verifier SDKs (sdk/test-sdks.sh, install only)"
SDK_INSTALL_ONLY=1 "$REPO_DIR/sdk/test-sdks.sh"

echo "==> Python example (sdk/python/.venv)"
if ! "$REPO_DIR/sdk/python/.venv/bin/python" -c \
  'import uvicorn, starlette, mcp.server.mcpserver, gatehouse_verify.mcp' 2>/dev/null; then
  echo "the SDK venv lacks what examples/python-mcp-server/server.py imports (it needs mcp 2.x)" >&2
  exit 1
fi

npm_ci() { # directory
  echo "==> npm ci in ${1#"$REPO_DIR"/}"
  (cd "$1" && "$NPM" ci --no-audit --no-fund --loglevel=error)
}

# npm ci every time: the TypeScript example holds a copy of the local SDK
# (install-links), which must follow sdk/typescript.
npm_ci "$EXAMPLES_DIR/typescript-mcp-server"
(cd "$EXAMPLES_DIR/typescript-mcp-server" && "$NPM" run --silent build)

npm_ci "$REPO_DIR/tests/mcp-e2e"

echo "examples set up"
