#!/usr/bin/env bash
# Create a virtual environment with Python 3.11 and install romandask into it:
#   scripts/setup.sh          ./.venv, romandask alone
#   scripts/setup.sh test     ./.venv, with the test extra (the newest roman_datamodels)
#   scripts/setup.sh peers    ./.venv-peers, with the test extra and the released
#                             romancal and romanimpreprocess (roman_datamodels 1.1)
# Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
case "${1:-}" in
    "")    VENV=.venv;       SPEC=. ;;
    test)  VENV=.venv;       SPEC='.[test]' ;;
    peers) VENV=.venv-peers; SPEC='.[test,peers]' ;;
    *)     echo "usage: scripts/setup.sh [test|peers]" >&2; exit 2 ;;
esac
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e "$SPEC"
