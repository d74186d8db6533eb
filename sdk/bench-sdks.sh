#!/usr/bin/env bash
# Benchmarks of the verifier SDKs: verifying a token with cached keys next to
# the bare signature check of the same algorithm with the same crypto library
# (issue 11: at most 1.25 times). Each SDK with its own tool. Runnable from
# any directory; installs what is missing the way sdk/test-sdks.sh does.
#
#   sdk/bench-sdks.sh              # python, typescript and rust
#   sdk/bench-sdks.sh python       # pytest-benchmark (sdk/python/benchmarks)
#   sdk/bench-sdks.sh typescript   # tinybench (sdk/typescript/bench)
#   sdk/bench-sdks.sh rust         # criterion (sdk/rust/benches/verify.rs)
#
# Environment: BENCH_TIME_MS (TypeScript, per task, default 3000);
# PYTEST_BENCH_ARGS (extra pytest-benchmark flags, e.g.
# "--benchmark-timer=time.thread_time" to count CPU time on a busy machine).
set -euo pipefail

SDK_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd -- "$SDK_DIR/.." && pwd)"
which="${1:-all}"
case "$which" in
  all | python | typescript | rust) ;;
  *) echo "usage: $0 [all|python|typescript|rust]" >&2; exit 2 ;;
esac

if [[ "$which" == all || "$which" == python ]]; then
  SDK_INSTALL_ONLY=1 "$SDK_DIR/test-sdks.sh" python >/dev/null
  echo "==> Python SDK (pytest-benchmark)"
  # shellcheck disable=SC2086 # PYTEST_BENCH_ARGS is a list of flags
  (cd "$SDK_DIR/python" && .venv/bin/python -m pytest -q -p no:cacheprovider benchmarks \
    --benchmark-only --benchmark-sort=name --benchmark-max-time=3 \
    --benchmark-columns=min,median,mean,stddev,rounds ${PYTEST_BENCH_ARGS:-})
fi
if [[ "$which" == all || "$which" == typescript ]]; then
  SDK_INSTALL_ONLY=1 "$SDK_DIR/test-sdks.sh" typescript >/dev/null
  echo "==> TypeScript SDK (tinybench, node $(node --version))"
  (cd "$SDK_DIR/typescript" && npm run --silent bench)
fi
if [[ "$which" == all || "$which" == rust ]]; then
  echo "==> Rust SDK (criterion)"
  (cd "$REPO_DIR" && cargo bench --locked -p gatehouse-verify --bench verify)
fi
