"""Helpers of tools/gpu_check.sh: the wheels the GPU image lacks, and the summary of a check's results.

    python tools/gpu_check.py wheels                      # pinned requirement lines (this environment's versions)
    python tools/gpu_check.py summary --out results/gpu   # summary.md in --out, and on stdout; exit 1 if a check failed
"""
import argparse, sys
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# What the notebooks with #|cuda cells need beyond the GPU image's packages (torch, numpy, scipy, pandas, matplotlib,
# scikit-learn, pillow, requests, pyyaml, rich, pygments, typing-extensions, packaging, cloudpickle, torchvision, six):
# nbdev_test and its notebook runner (execnb runs cells in IPython), fastai (without spacy: no text models here) and mnist1d.
WHEELS = ['nbdev', 'execnb', 'fastcore', 'fastgit', 'ghapi', 'astunparse', 'watchdog', 'asttokens',
          'ipython', 'ipython_pygments_lexers', 'jedi', 'parso', 'matplotlib-inline', 'traitlets', 'pexpect', 'ptyprocess',
          'prompt_toolkit', 'wcwidth', 'stack-data', 'executing', 'pure_eval',
          'fastai', 'fastprogress', 'fastdownload', 'fasttransform', 'plum-dispatch', 'beartype', 'mnist1d']

def wheels():
    "One `name==version` line per package, at the version installed here (so the GPU run uses what the tests here use)."
    missing = []
    for name in WHEELS:
        try: print(f'{name}=={metadata.version(name)}')
        except metadata.PackageNotFoundError: missing.append(name)
    if missing: sys.exit(f'not installed here (run make install): {missing}')

def summary(out, tag='gpu', bench_rc=None, nbdev_rc=None, notebooks='', seconds=None):
    "The check's results in words and tables: (b) the GPU ratios, (c) host synchronisation, compile times, (a) the notebooks."
    import benchmark as B
    lines, failed = [f'# GPU check ({seconds} s)' if seconds else '# GPU check'], []
    try: rows, compiles, meta = B.load(out, tag)
    except FileNotFoundError: rows, compiles, meta = [], [], None
    if meta:
        lines.append(f"{meta.get('gpu') or meta['cpu']}, torch {meta['torch']}, {meta['date']}; {meta['params']:,} parameters, "
                     f"dtypes {', '.join(meta['dtypes'])}, layouts {', '.join(map(str, meta['layouts']))} tensors; load "
                     f"{' '.join(f'{x:.2f}' for x in meta['loadavg_start'])} -> {' '.join(f'{x:.2f}' for x in meta.get('loadavg_end', []))}")
    lines.append(f"\n## (b) benchmark (exit status {bench_rc})")
    if not rows:
        lines.append('no results: the benchmark wrote no rows'); failed.append('benchmark: no rows')
    else:
        ours = [r for r in rows if r['kind'] == 'ours']
        lines.append('```\n' + (B.gpu_table(rows) or B.ratio_table(rows)) + '\n```')
        refs = [r for r in rows if r['kind'] == 'torch' and r['path'] == 'fused' and r['optimizer'] in ('AdamW', 'SGD-mom')]
        if refs:
            lines.append("torch's fused references (ms): " + '; '.join(f"{r['optimizer']} {r['dtype']} {r['layout']} {r['ms']:.3f}" for r in refs))
        met = [r['ref_met'] for r in ours if r['ref_met'] != '']
        if met: lines.append(f"GPU targets (fused <= {B.TARGETS['gpu']}x torch's fused reference) met: {sum(met)} of {len(met)}")
        fl = [r['met'] for r in ours if r['met'] != '']
        if fl: lines.append(f"floor targets (fused <= {B.TARGETS['fused']}, default <= {B.TARGETS['default']}) met: {sum(fl)} of {len(fl)}")
        lines.append('```\n' + B.memory_table(rows) + '\n```')
        lines.append('```\n' + B.compile_table(compiles, meta) + '\n```')
        rec = [r for r in rows if r['kind'] in ('ours', 'transform', 'base') and r['recompiles']]
        if rec: lines.append('recompiled during the timed rounds: ' + ', '.join(f"{r['optimizer']} {r['path']} {r['dtype']} {r['layout']} ({r['recompiles']})" for r in rec))
        lines.append(f"\n## (c) host synchronisation: 20 steps under torch.cuda.set_sync_debug_mode('error')")
        checked = [r for r in rows if r['host_sync'] != '']
        if not checked: lines.append('not run (CPU, or no block finished)')
        else:
            bad = [r for r in checked if r['host_sync'] != 'ok']
            lines.append(f"{len(checked) - len(bad)} of {len(checked)} steps ran without a host synchronisation")
            for r in bad: lines.append(f"- {r['optimizer']} {r['path']} ({r['dtype']}, {r['layout']}): {r['host_sync']}")
            done = {(r['optimizer'], r['path']) for r in checked}
            lost = [f'{name} {p}' for name in B.METHODS for p in ('default', 'fused') if (name, p) not in done]
            if lost: lines.append('not checked (skipped or not built): ' + ', '.join(lost))
            if bad: failed.append(f'{len(bad)} steps synchronise with the host')
        if meta and meta.get('skipped'):
            lines.append('\nskipped:\n' + '\n'.join(f"- {s['block']}: {s['step']}: {s['why']}" for s in meta['skipped']))
    lines.append(f"\n## (a) nbdev_test --flags cuda ({notebooks or 'no notebooks'}): "
                 + ('passed' if str(nbdev_rc) == '0' else 'timed out' if str(nbdev_rc) == '124' else str(nbdev_rc) if nbdev_rc == 'skipped' else f'FAILED (exit status {nbdev_rc})'))
    if str(nbdev_rc) not in ('0', 'skipped'): failed.append(f'nbdev_test exit status {nbdev_rc}')
    if str(bench_rc) not in ('0', 'None'): failed.append(f'benchmark exit status {bench_rc}' + (' (timed out)' if str(bench_rc) == '124' else ''))
    lines.append('\n' + (f"**failed**: {'; '.join(failed)}" if failed else 'every check ran'))
    text = '\n'.join(lines)
    Path(out, 'summary.md').write_text(text + '\n')
    print(text)
    return not failed

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = ap.add_subparsers(dest='cmd', required=True)
    sub.add_parser('wheels')
    s = sub.add_parser('summary')
    s.add_argument('--out', default='results/gpu'); s.add_argument('--tag', default='gpu')
    s.add_argument('--bench-rc', default=None); s.add_argument('--nbdev-rc', default=None)
    s.add_argument('--notebooks', default=''); s.add_argument('--seconds', default=None)
    a = ap.parse_args()
    if a.cmd == 'wheels': wheels()
    else: sys.exit(0 if summary(a.out, a.tag, a.bench_rc, a.nbdev_rc, a.notebooks, a.seconds) else 1)
