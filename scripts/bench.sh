#!/usr/bin/env bash
# The benchmark suite in one command (issue 5): bootstrap as the other scripts do, then run
# bench/run.py with the arguments given (none: the full suite, 3 rounds; --quick: a short run;
# --profile WORKLOAD: a flame graph). The report goes to docs/performance.md and
# bench/results/; see bench/README.md.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
if [ "$(id -u)" -ne 0 ]; then
  echo "bench.sh: error: run as root (it mounts FUSE filesystems and drops the kernel caches)" >&2
  exit 1
fi
bash "$here/scripts/bootstrap.sh"
cd "$here"
exec .venv/bin/python bench/run.py "$@"
