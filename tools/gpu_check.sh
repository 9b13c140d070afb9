#!/usr/bin/env bash
# The GPU check of issue 14: one command, at most about 8 minutes on one H200. From the repository root:
#
#   bash tools/gpu_check.sh                  on a machine with a GPU; every number goes to $OUT (default results/gpu)
#   bash tools/gpu_check.sh --cpu            dry run of its Python parts on CPU (a tiny benchmark and the summary)
#   bash tools/gpu_check.sh --fetch-wheels   here, where pip works: the packages the GPU image lacks, into .whl/
#
# It runs, in this order (the most important first, each under its own time limit):
#   (b) tools/benchmark.py --device cuda at 100M parameters, fp32 and bf16, 4 large and 2,500 small tensors: our
#       default and fused steps against torch's fused AdamW and fused SGD-momentum (targets: fused <= 1.2x, AdamW for
#       the Adam-like methods, SGD-momentum for the SGD-like ones), and
#   (c) in the same process, after each step's first call, 20 steps of every registry optimizer (default and fused)
#       and of each transform in front of fused SGD-momentum under torch.cuda.set_sync_debug_mode('error');
#   (a) nbdev_test --flags cuda over the notebooks that have #|cuda cells;
# then tools/gpu_check.py summarizes all of it into $OUT/summary.md and on stdout.
#
# The device machine's image has python3 with torch, but not nbdev, execnb, fastai or mnist1d (the notebooks need
# them): run `bash tools/gpu_check.sh --fetch-wheels` here first and name `.whl` in the device call's carry. Without
# .whl/, step (a) is skipped with the reason; (b) and (c) need torch only.
# Files in $OUT (at most 8, the device tool's limit): gpu_check.log, summary.md, bench_gpu.csv, bench_gpu_compile.csv,
# bench_gpu_meta.json, bench_gpu.png, profile_gpu.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=gpu
case "${1:-}" in
  "") ;;
  --cpu) MODE=cpu ;;
  --fetch-wheels) MODE=wheels ;;
  *) echo "usage: bash tools/gpu_check.sh [--cpu | --fetch-wheels]"; exit 2 ;;
esac
PY=${PYTHON:-}
if [ -z "$PY" ]; then if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi; fi

if [ $MODE = wheels ]; then     # pinned to this checkout's .venv versions; pure-Python wheels, and manylinux ones for CPython 3.12
  req=$(mktemp); $PY tools/gpu_check.py wheels > "$req" || exit 1
  $PY -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      --platform manylinux1_x86_64 -d .whl -r "$req" || exit 1
  echo "wheels in .whl/ ($(du -sh .whl | cut -f1)); name .whl in the device call's carry"
  exit 0
fi

OUT=${OUT:-results/gpu}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
T0=$(date +%s)
LIMIT=${GPU_CHECK_SECONDS:-470}             # the whole check; the device tool's limit is 600 s per command
left() { echo $(( LIMIT - ($(date +%s) - T0) )); }
echo "gpu_check ($MODE): $(date -u '+%Y-%m-%d %H:%M UTC'), python $($PY -c 'import sys; print(sys.version.split()[0])'), load $(cut -d' ' -f1-3 /proc/loadavg)"

if [ $MODE = gpu ]; then
  if ! $PY -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: no CUDA device visible to $PY ($($PY -c 'import torch; print("torch", torch.__version__)' 2>&1 | tail -1))."
    echo "Nothing was measured. On a GPU machine run it again; here, 'bash tools/gpu_check.sh --cpu' dry-runs its Python parts."
    exit 3
  fi
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv,noheader 2>/dev/null
fi
if ls .whl/*.whl >/dev/null 2>&1; then
  echo "installing $(ls .whl/*.whl | wc -l) wheels from .whl/ into /tmp/gpu_site"
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu_site .whl/*.whl \
    && export PYTHONPATH=/tmp/gpu_site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 MPLBACKEND=Agg PYTHONWARNINGS=ignore::FutureWarning

echo "=== (b) + (c): benchmark and host-sync check ($(left) s left)"
if [ $MODE = gpu ]; then
  timeout 300 $PY tools/benchmark.py --device cuda --out "$OUT" --tag gpu --time-budget 200 --compile-timeout 150 \
      --transform-paths default --sync-steps 20
else
  timeout 300 $PY tools/benchmark.py --device cpu --quick --out "$OUT" --tag gpu --layouts 4,2500 --params 2e5
fi
RC_B=$?
echo "=== (b) + (c) exit status $RC_B after $(( $(date +%s) - T0 )) s"

echo "=== (a): nbdev_test --flags cuda on the notebooks with #|cuda cells ($(left) s left)"
NBS=$(grep -l '#|cuda' nbs/*.ipynb | xargs -n1 basename | sed 's/\.ipynb$//' | paste -sd'|')
RC_A=skipped
if [ $MODE = cpu ]; then
  echo "skipped in --cpu: the #|cuda cells need a GPU (notebooks: ${NBS//|/, })"
elif ! $PY -c 'import nbdev, execnb, fastcore, fastai, mnist1d' 2>/dev/null; then
  echo "skipped: $($PY -c 'import nbdev, execnb, fastcore, fastai, mnist1d' 2>&1 | tail -1) -- run 'bash tools/gpu_check.sh --fetch-wheels' where pip works and carry .whl"
elif [ "$(left)" -lt 60 ]; then
  echo "skipped: $(left) s left"
else
  GRADUAL_OPT_TEST=1 timeout "$(left)" $PY -c 'import sys; from nbdev.test import nbdev_test; sys.argv[0] = "nbdev_test"; nbdev_test()' \
      --flags cuda --path nbs --file_re "^($NBS)\.ipynb$" --n_workers "$(echo "$NBS" | tr '|' '\n' | wc -l)" --timing
  RC_A=$?
fi
echo "=== (a) exit status $RC_A after $(( $(date +%s) - T0 )) s"

$PY tools/gpu_check.py summary --out "$OUT" --tag gpu --bench-rc "$RC_B" --nbdev-rc "$RC_A" --notebooks "${NBS//|/,}" \
    --seconds $(( $(date +%s) - T0 ))
RC=$?
exec 1>&- 2>&-; sleep 1      # let tee write the end of gpu_check.log before the device tool collects $OUT
exit $RC
