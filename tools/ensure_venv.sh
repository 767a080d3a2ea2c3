#!/usr/bin/env bash
# Create .venv when missing; reinstall only when the pinned requirements changed (hash stamp).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
want=$(cat requirements.txt requirements-test.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ -f .venv/.headbook-req ] && [ "$(cat .venv/.headbook-req)" = "$want" ]; then
  exit 0
fi
echo ">> installing the pinned environment into .venv (first run: a few minutes)"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-test.txt
.venv/bin/pip install --quiet --disable-pip-version-check --no-deps -e .
echo "$want" > .venv/.headbook-req
echo ">> .venv ready"
