#!/usr/bin/env bash
# Bootstrap, lint, then run the whole test suite (engine tests and real-mount tests).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bash "$here/scripts/bootstrap.sh"
cd "$here"
.venv/bin/ruff check src tests
exec .venv/bin/python -m pytest -q "$@"
