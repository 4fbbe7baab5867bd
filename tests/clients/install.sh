#!/usr/bin/env bash
# Install the third-party Daraja clients that tests/clients/test_real_clients.py drives against the
# standalone simulator: the pinned Python ones into the current Python, and the npm one into
# tests/clients/node (when node and npm are on PATH). Exits non-zero if an install fails.
#
#   bash tests/clients/install.sh            # uses `python` (or python3) from PATH
#   PYTHON=.venv/bin/python bash tests/clients/install.sh
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"

PYTHON="${PYTHON:-$(command -v python || command -v python3 || true)}"
if [ -z "$PYTHON" ]; then
  echo "install.sh: no python on PATH (set PYTHON=/path/to/python)" >&2
  exit 1
fi

constraints=()
if [ -f "$ROOT/constraints.txt" ]; then
  constraints=(-c "$ROOT/constraints.txt")
fi
echo "Installing tests/clients/requirements.txt with $PYTHON ..." >&2
"$PYTHON" -m pip install --quiet --disable-pip-version-check "${constraints[@]}" -r "$HERE/requirements.txt" 2>&1 | { grep -v "^WARNING: Location" || true; }

if [ -f "$HERE/node/package.json" ]; then
  if command -v npm >/dev/null 2>&1 && command -v node >/dev/null 2>&1; then
    echo "Installing tests/clients/node (npm ci) ..." >&2
    (cd "$HERE/node" && npm ci --no-audit --no-fund)
  else
    echo "install.sh: node/npm not found: the npm client test will be skipped" >&2
  fi
fi
echo "Client libraries installed." >&2
