"""Step-time benchmark of gradual_opt's optimizers against torch.optim, in one run on the same parameters.

Covers every optimizer of `gradual_opt.core.registry()` (batched and one tensor at a time), and the overhead
of the gradient transforms (Centralize, AGR, AutoscaleNorm, all three) in front of torch's foreach SGD-momentum (AGR
also in front of foreach AdamW): the step time with the transforms divided by the plain step's, in the same rounds.

    python tools/benchmark.py                 # full run: 1M, 10M, 25M, 50M fp32 parameters, 2 threads -> results/perf/
    python tools/benchmark.py --quick         # a small run (seconds), like the one the report notebook makes live
    python tools/benchmark.py --threads 2 --sizes 2.5e7,1e6,1e7,5e7 --reps 5 --out nbs/perf --tag cpu2t --profile 2.5e7
                                              # refresh the run that nbs/90_performance.ipynb reports
    python tools/benchmark.py --device cuda --tag gpu   # on a GPU machine (steps timed between synchronizations)

For every size and layout ('many': tensors of 10k elements, 'few': 4 tensors) it builds one set of parameters with
fixed gradients, one optimizer of each kind over them, and times `step()` round-robin (one step of each optimizer per
round, so that a change in machine load hits all of them alike); the median over rounds after warm-up is reported. The transformed
optimizers run on a second set of parameters whose gradients are put back after each of their steps, untimed (the
transforms rewrite `p.grad` in place).
Floors measured in the same rounds: streaming bandwidth (`_foreach_add_` of the gradients into the parameters) and one
`torch.pow` pass over all elements (in place, on a scratch copy). Each of our optimizers is compared with
"best torch step with the same number of state buffers + one pow pass". Optimizer state is measured in bytes per
parameter (full-size buffers, and per-tensor scalars) and compared with the documented value.
Writes <out>/bench_<tag>.csv, <out>/bench_<tag>_meta.json and <out>/bench_<tag>.png.
"""
import argparse, csv, datetime, json, os, platform, statistics, sys, time
from pathlib import Path
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gradual_opt.core import registry          # noqa: E402
from gradual_opt.transforms import with_transforms, Centralize, AGR, AutoscaleNorm   # noqa: E402

# Every optimizer of the registry is benchmarked (a new method needs no line here). Its documented state, in full-size
# buffers per parameter, comes from the registry; torch's baselines are listed here.
METHODS = {m.name: m for m in registry('optimizer')}
DOC_BUFFERS = {**{name: m.buffers for name, m in METHODS.items()}, 'SGD': 0, 'SGD-mom': 1, 'AdamW': 2}
OURS = tuple(METHODS)     # compared with "best torch step, same buffers, + one pow pass"
TRANSFORMS = {'Centralize': lambda fe: [Centralize(foreach=fe)], 'AGR': lambda fe: [AGR(foreach=fe)],
              'AutoscaleNorm': lambda fe: [AutoscaleNorm(foreach=fe)],
              'all three': lambda fe: [Centralize(foreach=fe), AGR(foreach=fe), AutoscaleNorm(foreach=fe)]}

DEVICE = 'cpu'

def make_params(n, layout, dtype=torch.float32, seed=0, matrices=False):
    "`n` parameters as 'many' tensors of 10k elements or as 'few' (4) tensors, with fixed gradients (`matrices`: 2-d, rows of 100 or 1000)."
    k = max(1, n // 10_000) if layout == 'many' else 4
    g = torch.Generator().manual_seed(seed)
    m = n // k; c = 100 if layout == 'many' else 1000
    shape = (m // c, c) if matrices and m % c == 0 else (m,)      # the transforms act on tensors with >= 2 dims only
    ps = [torch.nn.Parameter(torch.randn(shape, generator=g, dtype=dtype).to(DEVICE)) for _ in range(k)]
    for p in ps: p.grad = (torch.randn(p.shape, generator=g, dtype=dtype)*1e-2).to(DEVICE)
    return ps

def optimizers(ps, compile_sgd=True):
    "name -> (family, path, number of full-size state buffers, optimizer or None, step function)."
    out = {}
    def add(family, path, opt, step=None): out[f'{family} {path}'] = (family, path, DOC_BUFFERS[family], opt, step or opt.step)
    def sched(opt): opt.set_schedule(total_steps=10**6, step=300_000); return opt   # exponent 0.3: a fractional power
    for path, fe in [('per tensor', False), ('foreach', True)]:
        for name, m in METHODS.items():      # the registry's test settings, at lr 1e-3; schedules at 30% (a fractional power)
            kw = {k: v for k, v in m.test_kwargs.items() if k not in ('lr', 'total_steps')}
            opt = m.cls(ps, lr=1e-3, foreach=fe, **kw)
            add(name, path, sched(opt) if m.cls.scheduled and 'total_steps' in opt.defaults else opt)
    add('SGD', 'for-loop', torch.optim.SGD(ps, lr=1e-3, foreach=False))
    add('SGD', 'foreach', torch.optim.SGD(ps, lr=1e-3, foreach=True))
    add('SGD-mom', 'for-loop', torch.optim.SGD(ps, lr=1e-3, momentum=0.9, foreach=False))
    add('SGD-mom', 'foreach', torch.optim.SGD(ps, lr=1e-3, momentum=0.9, foreach=True))
    if compile_sgd and len(ps) <= 64:                     # compiling a step over thousands of tensors takes minutes here
        opt = torch.optim.SGD(ps, lr=1e-3, momentum=0.9, foreach=True)
        add('SGD-mom', 'compiled', opt, torch.compile(opt.step))
    add('AdamW', 'foreach', torch.optim.AdamW(ps, lr=1e-3, foreach=True))
    add('AdamW', 'fused', torch.optim.AdamW(ps, lr=1e-3, fused=True))
    return out

def transformed(ps2):
    "Transform overhead: name -> (family, path, base name, optimizer); the transforms' own paths ('foreach': fast, 'readable')."
    out = {'SGD-mom base': ('SGD-mom + none', 'foreach', 'SGD-mom base', torch.optim.SGD(ps2, lr=1e-3, momentum=0.9, foreach=True)),
           'AdamW base': ('AdamW + none', 'foreach', 'AdamW base', torch.optim.AdamW(ps2, lr=1e-3, foreach=True))}
    for name, mk in TRANSFORMS.items():
        for path, fe in [('foreach', None), ('readable', False)]:
            out[f'SGD-mom+{name} {path}'] = (f'SGD-mom + {name}', path, 'SGD-mom base',
                                             with_transforms(torch.optim.SGD, *mk(fe))(ps2, lr=1e-3, momentum=0.9, foreach=True))
    out['AdamW+AGR foreach'] = ('AdamW + AGR', 'foreach', 'AdamW base', with_transforms(torch.optim.AdamW, AGR())(ps2, lr=1e-3, foreach=True))
    return out

def restore_grads(ps2, g0):
    "The transforms rewrite p.grad in place: put the fixed gradients back (outside the timed call)."
    return lambda: torch._foreach_copy_([p.grad for p in ps2], g0)

def floors(ps, e=0.3):
    "The two floors as step functions: streaming `_foreach_add_` and one in-place pow pass on a scratch copy."
    gs = [p.grad for p in ps]
    scratch = [g.abs().add_(0.5) for g in gs]
    flip = [e]
    def stream(): torch._foreach_add_([p.data for p in ps], gs, alpha=-1e-9)
    def pow_pass(): torch._foreach_pow_(scratch, flip[0]); flip[0] = 1/flip[0]   # e and 1/e alternately: values stay put
    return {'stream (_foreach_add_)': stream, 'pow pass': pow_pass}

def state_bytes(opt, ps):
    "(bytes per parameter in full-size state buffers, bytes per parameter in 0-d state tensors such as step counters)."
    n = sum(p.numel() for p in ps); full = small = 0
    for st in opt.state.values():
        for v in st.values():
            if not torch.is_tensor(v): continue
            if v.dim() > 0: full += v.nbytes                      # a buffer of the parameter's shape
            else: small += v.nbytes
    return full/n, small/n

def time_round_robin(fns, warmup, reps):
    "Median seconds per call of each function, calling them in turn `warmup + reps` times (a `(f, after)` pair: `after` runs untimed)."
    ts = {k: [] for k in fns}
    for r in range(warmup + reps):
        for k, f in fns.items():
            f, after = f if isinstance(f, tuple) else (f, None)
            if DEVICE != 'cpu': torch.cuda.synchronize()
            t0 = time.perf_counter(); f()
            if DEVICE != 'cpu': torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            if after: after()
            if r >= warmup: ts[k].append(dt)
    return {k: statistics.median(v) for k, v in ts.items()}, ts

def bench_one(n, layout, warmup, reps, compile_sgd=True, log=print, transforms=True):
    "All optimizers and floors on one set of parameters (and the transform runs on a second set); returns the CSV rows."
    ps = make_params(n, layout)
    opts = optimizers(ps, compile_sgd)
    fl = floors(ps)
    fns = {**{k: v[4] for k, v in opts.items()}, **fl}
    tro = {}
    if transforms:                                              # a second set: the transforms rewrite its gradients
        ps2 = make_params(n, layout, seed=1, matrices=True); g0 = [p.grad.clone() for p in ps2]; tro = transformed(ps2)
        for k, (fam, path, base, opt) in tro.items(): fns[k] = (opt.step, restore_grads(ps2, g0)) if fam.split(' + ')[1] != 'none' else opt.step
    t0 = time.perf_counter()
    if compile_sgd and 'SGD-mom compiled' in fns:               # compile outside the timed rounds
        try: fns['SGD-mom compiled'](); fns['SGD-mom compiled']()
        except Exception as ex: log(f'torch.compile failed, skipped: {type(ex).__name__}: {ex}'); fns.pop('SGD-mom compiled'); opts.pop('SGD-mom compiled')
    t_compile = time.perf_counter() - t0
    load0 = os.getloadavg()[0]
    med, _ = time_round_robin(fns, warmup, reps)
    load1 = os.getloadavg()[0]
    best = {}                                                   # best torch step per number of state buffers
    for k, (fam, path, nb, opt, _) in opts.items():
        if fam in ('SGD', 'SGD-mom', 'AdamW') and k in med: best[nb] = min(best.get(nb, float('inf')), med[k])
    rows = []
    for k, t in med.items():
        if k in tro: continue
        fam, path, nb, opt, _ = opts[k] if k in opts else ('floor', k, None, None, None)
        ours = fam in OURS
        floor = best[max(k for k in best if k <= nb)] + med['pow pass'] if ours else None   # Adan's 4 buffers: torch has no 4-buffer step, AdamW's 2 stand in
        full, small = state_bytes(opt, ps) if opt is not None else (None, None)
        rows.append(dict(params=n, layout=layout, tensors=len(ps), optimizer=fam, path=path, state_buffers=nb,
                         ms=round(t*1e3, 4), ns_per_param=round(t*1e9/n, 4),
                         floor_ms=round(floor*1e3, 4) if floor else '', ratio_to_floor=round(t/floor, 4) if floor else '',
                         ratio_to_stream=round(t/med['stream (_foreach_add_)'], 4),
                         state_bytes_per_param=round(full, 4) if full is not None else '',
                         state_scalar_bytes_per_param=round(small, 6) if small is not None else '',
                         documented_bytes_per_param=4*nb if nb is not None else '',
                         loadavg=round((load0 + load1)/2, 2), compile_s=round(t_compile, 1) if k == 'SGD-mom compiled' else '',
                         base='', ratio_to_base=''))
    for k, (fam, path, base, opt) in tro.items():               # transform overhead: step with transforms / base step, same rounds
        t = med[k]; nb = DOC_BUFFERS[fam.split(' + ')[0]]
        full, small = state_bytes(opt, ps2)
        rows.append(dict(params=n, layout=layout, tensors=len(ps2), optimizer=fam, path=path, state_buffers=nb,
                         ms=round(t*1e3, 4), ns_per_param=round(t*1e9/n, 4), floor_ms='', ratio_to_floor='',
                         ratio_to_stream=round(t/med['stream (_foreach_add_)'], 4), state_bytes_per_param=round(full, 4),
                         state_scalar_bytes_per_param=round(small, 6), documented_bytes_per_param=4*nb,
                         loadavg=round((load0 + load1)/2, 2), compile_s='', base=base.split()[0], ratio_to_base=round(t/med[base], 4)))
    del opts, fl, fns, ps, tro
    return rows

def profile(n=25_000_000, layout='few', names=tuple(f'{name} foreach' for name in METHODS),
            tnames=('SGD-mom base', 'SGD-mom+AGR foreach', 'SGD-mom+AutoscaleNorm foreach', 'SGD-mom+Centralize foreach'),
            steps=3, row_limit=12):
    "torch.profiler tables (self CPU time by op) of a few steps of the named optimizers (and transformed ones): where the time goes."
    from torch.profiler import profile as tprofile, ProfilerActivity
    ps = make_params(n, layout); opts = optimizers(ps, compile_sgd=False); out = {}
    for name in names:
        step = opts[name][4]; step(); step()                      # warm up
        with tprofile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps): step()
        out[name] = prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=row_limit)
    del opts
    ps2 = make_params(n, layout, seed=1, matrices=True); g0 = [p.grad.clone() for p in ps2]; tro = transformed(ps2); reset = restore_grads(ps2, g0)
    for name in tnames:
        opt = tro[name][3]; opt.step(); reset(); opt.step(); reset()
        with tprofile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                opt.step()
                with torch.profiler.record_function('(benchmark: restore the gradients, not part of the step)'): reset()
        out[name] = prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=row_limit)
    return out

def machine():
    "A short description of this machine and run."
    cpu = platform.processor() or platform.machine()
    try: cpu = next(l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name'))
    except Exception: pass
    return dict(cpu=cpu, cores=os.cpu_count(), threads=torch.get_num_threads(), torch=torch.__version__,
                python=platform.python_version(), device=DEVICE,
                gpu=torch.cuda.get_device_name() if DEVICE != 'cpu' else None,
                date=datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'))

def plot(rows, path=None):
    "Step time against parameter count, one panel per layout; returns the figure."
    import matplotlib.pyplot as plt
    layouts = sorted({r['layout'] for r in rows})
    fig, axs = plt.subplots(1, len(layouts), figsize=(6*len(layouts), 4.2), squeeze=False, sharey=True)
    for ax, lay in zip(axs[0], layouts):
        rs = [r for r in rows if r['layout'] == lay and ' + ' not in r['optimizer']]   # transform runs: their own table
        for key in dict.fromkeys((r['optimizer'], r['path']) for r in rs):
            pts = sorted((r['params'], r['ms']) for r in rs if (r['optimizer'], r['path']) == key)
            ours, fl = key[0] in OURS, key[0] == 'floor'
            ax.loglog(*zip(*pts), marker='o' if ours else '.', lw=2 if fl else 1.2, ls=':' if fl else '--' if not ours else '-',
                      label=f'{key[0]} {key[1]}' if not fl else key[1], alpha=0.9)
        ax.set_title(f"layout '{lay}'"); ax.set_xlabel('parameters'); ax.grid(alpha=.3, which='both')
    axs[0][0].set_ylabel('step time (ms, median)')
    axs[0][-1].legend(fontsize=7, ncol=2, loc='upper left')
    fig.tight_layout()
    if path: fig.savefig(path, dpi=90)
    return fig

def run(sizes=(1_000_000, 10_000_000, 25_000_000, 50_000_000), layouts=('many', 'few'), threads=2, warmup=2, reps=7,
        out='results/perf', tag='cpu', compile_sgd=True, log=print):
    "Run the whole benchmark; write CSV, meta JSON and PNG into `out`; return (rows, meta)."
    if threads: torch.set_num_threads(threads)
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    meta = machine(); meta['loadavg_start'] = os.getloadavg(); rows = []
    meta['warmup'], meta['reps'] = warmup, reps
    def save():                                                 # after every size/layout: a cut-short run keeps its rows
        meta['loadavg_end'] = os.getloadavg(); meta['sizes'] = sorted({r['params'] for r in rows})
        with open(out/f'bench_{tag}.csv', 'w', newline='') as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0])); w.writeheader(); w.writerows(rows)
        (out/f'bench_{tag}_meta.json').write_text(json.dumps(meta, indent=1))
        import matplotlib.pyplot as plt
        plt.close(plot(rows, out/f'bench_{tag}.png'))
    for n in sizes:
        for lay in layouts:
            t0 = time.time(); rs = bench_one(n, lay, warmup, reps, compile_sgd, log); rows += rs
            log(f'{n:>11,} {lay:5s}: {time.time() - t0:5.1f} s, load {rs[0]["loadavg"]}'); save()
    return rows, meta

def summary(rows, n=None):
    "The ratio tables at size `n` (default: the largest): each of our optimizers vs its floor, each transformed step vs its base."
    n = n or max(r['params'] for r in rows)
    lines = [f"{'optimizer':10s} {'path':9s} {'layout':6s} {'ms':>9s} {'floor ms':>9s} {'ratio':>6s}"]
    for r in rows:
        if r['params'] == n and r['ratio_to_floor'] != '':
            lines.append(f"{r['optimizer']:10s} {r['path']:9s} {r['layout']:6s} {r['ms']:9.2f} {r['floor_ms']:9.2f} {r['ratio_to_floor']:6.2f}")
    tr = [r for r in rows if r['params'] == n and r.get('ratio_to_base', '') != '']
    if tr:
        lines.append(f"\n{'with transforms':27s} {'path':9s} {'layout':6s} {'ms':>9s} {'/ base':>6s}")
        for r in tr: lines.append(f"{r['optimizer']:27s} {r['path']:9s} {r['layout']:6s} {r['ms']:9.2f} {r['ratio_to_base']:6.2f}")
    return '\n'.join(lines)

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--quick', action='store_true', help='small sizes (200k, 1M), few repetitions')
    ap.add_argument('--sizes', type=lambda s: [int(float(x)) for x in s.split(',')], default=None, help='e.g. 1e6,1e7,2.5e7,5e7')
    ap.add_argument('--layouts', default='many,few')
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--warmup', type=int, default=2)
    ap.add_argument('--reps', type=int, default=7)
    ap.add_argument('--out', default='results/perf')
    ap.add_argument('--tag', default='cpu')
    ap.add_argument('--device', default='cpu', help="'cpu' or 'cuda' (then steps are timed between synchronizations)")
    ap.add_argument('--no-compile', action='store_true', help='skip torch.compile of SGD-momentum')
    ap.add_argument('--profile', type=lambda s: int(float(s)), default=None, metavar='N',
                    help='also write torch.profiler tables of our foreach steps at N parameters (few + many) to <out>/profile_<tag>.txt')
    a = ap.parse_args()
    DEVICE = a.device
    sizes = a.sizes or ([200_000, 1_000_000] if a.quick else [1_000_000, 10_000_000, 25_000_000, 50_000_000])
    rows, meta = run(sizes, a.layouts.split(','), a.threads, a.warmup, 3 if a.quick else a.reps, a.out, a.tag, not a.no_compile)
    print(json.dumps(meta))
    for n in sorted({r['params'] for r in rows}): print(f'\n{n:,} parameters\n' + summary(rows, n))
    if a.profile:
        with open(Path(a.out)/f'profile_{a.tag}.txt', 'w') as f:
            for lay in a.layouts.split(','):
                for name, table in profile(a.profile, lay).items():
                    f.write(f'=== {name}, {a.profile:,} parameters, layout {lay}, {torch.get_num_threads()} threads, 3 steps\n{table}\n')
        print('profile written to', Path(a.out)/f'profile_{a.tag}.txt')
