#!/usr/bin/env bash
# The test command behind `make test`. Each stage prints how long it took.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
export MPLBACKEND=Agg GRADUAL_OPT_TEST=1 PYTHONWARNINGS=ignore::FutureWarning
# Two notebooks at a time, one torch thread each: 2 cores, no oversubscription.
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
WORKERS=${WORKERS:-2}
stage() { local name=$1; shift; local t0=$(date +%s); echo "=== stage: $name"; "$@"; echo "=== stage $name: $(( $(date +%s) - t0 )) s"; }

check_export() {
  local tmp; tmp=$(mktemp -d); trap "rm -rf $tmp" RETURN
  # __init__.py: nbdev_export keeps its version line; py.typed: the PEP 561 marker, a file nbdev does not make.
  cp -rL settings.ini nbs "$tmp/"; mkdir "$tmp/gradual_opt"; cp gradual_opt/__init__.py gradual_opt/py.typed "$tmp/gradual_opt/"
  (cd "$tmp" && "$OLDPWD/$BIN/nbdev_export")
  if ! diff -r -x __pycache__ "$tmp/gradual_opt" gradual_opt; then
    echo "gradual_opt/ is not what nbdev_export makes from nbs/: run 'make export' and commit."; return 1; fi
  echo "gradual_opt/ is in sync with nbs/"
}
check_clean() {
  local tmp; tmp=$(mktemp -d); trap "rm -rf $tmp" RETURN
  cp -rL settings.ini nbs "$tmp/"
  (cd "$tmp" && "$OLDPWD/$BIN/nbdev_clean" --fname nbs)
  if ! diff -r "$tmp/nbs" nbs >/dev/null; then
    diff -rq "$tmp/nbs" nbs || true
    echo "notebooks are not clean: run 'make clean' and commit."; return 1; fi
  echo "notebooks are clean"
}
run_pytest() {
  set +e; $BIN/python -m pytest -q tests; local rc=$?; set -e
  [ $rc -eq 5 ] && { echo "pytest: no tests collected"; return 0; }
  return $rc
}

t_all=$(date +%s)
stage export-in-sync check_export
stage notebooks-clean check_clean
stage readme-in-sync $BIN/python tools/make_readme.py --check
stage notebooks-run $BIN/nbdev_test --n_workers "$WORKERS" --timing
stage pytest run_pytest
echo "=== all stages: $(( $(date +%s) - t_all )) s"
