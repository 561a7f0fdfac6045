#!/usr/bin/env bash
# One entry point for a fresh machine with Python 3.11 and pip:
#   bash scripts/run.sh compare   set up .venv, then `pyrogen compare --problem tour` (the
#                                 README's main job; other arguments go to pyrogen compare)
#   bash scripts/run.sh test      set up .venv (if missing or stale), lint, type-check, test,
#                                 and build the API reference (warnings are errors)
#   bash scripts/run.sh docs      set up .venv, build the API reference into docs/api/_build
#   bash scripts/run.sh setup     only set up .venv
# torch is pinned through constraints.txt: an unpinned torch pulls several GB of CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.pyrogen-installed

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    echo "creating $VENV"
    "$PY" -m venv "$VENV"
  fi
  # Reinstall only when the dependency files changed since the last install.
  local want
  want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
  if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ]; then
    echo "installing pyrogen and its test/dev extras into $VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -c constraints.txt -e ".[test,dev,docs]"
    echo "$want" > "$STAMP"
  fi
}

run_tests() {
  setup
  echo "== ruff"
  "$VENV/bin/ruff" check pyrogen tests benchmarks examples
  "$VENV/bin/ruff" format --check pyrogen tests benchmarks examples
  echo "== mypy"
  "$VENV/bin/mypy" pyrogen
  echo "== pytest"
  # The default run excludes nothing: slow statistical tests run too (about a minute).
  "$VENV/bin/python" -m pytest "$@"
  build_docs
}

build_docs() {
  setup
  echo "== docs (Sphinx, warnings are errors)"
  "$VENV/bin/python" -m sphinx -E -b html -q -W --keep-going docs/api docs/api/_build
  echo "API reference: docs/api/_build/index.html"
}

cmd=${1:-test}
shift || true
case "$cmd" in
  setup) setup ;;
  # the tour unless another --problem is given (argparse keeps the last one)
  compare) setup; "$VENV/bin/pyrogen" compare --problem tour "$@" ;;
  test) run_tests "$@" ;;
  docs) build_docs ;;
  *) echo "usage: bash scripts/run.sh [setup|compare|test|docs] [args...]" >&2; exit 2 ;;
esac
