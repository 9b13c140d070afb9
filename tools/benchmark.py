"""Step-time benchmark of gradual_opt's optimizers against their floors and torch.optim, in one run on the same parameters.

    python tools/benchmark.py                   # the full CPU run (make bench, about 10 minutes on 2 idle cores): 25M fp32
                                                # parameters, layouts of 4 and 2,500 tensors, 2 and 1 threads -> results/perf/
    python tools/benchmark.py --out nbs/perf    # the same, into the folder the report notebook (90_performance) reads
    python tools/benchmark.py --quick           # seconds: 1M parameters, one thread, 3 rounds, no compiled step (--fused: with)
    python tools/benchmark.py --device cuda     # on a GPU: 100M parameters, fp32 and bf16, 20 steps of each under
                                                # torch.cuda.set_sync_debug_mode('error') (tools/gpu_check.sh runs this)

For every block (dtype x thread count x layout) it builds one set of parameters with fixed gradients and, over them,
every optimizer of `gradual_opt.registry('optimizer')` on each path -- 'default' (`foreach=None`) and 'fused'
(`fused=True`: the step compiled by torch.compile/Inductor; the first step compiles), and with `--paths` also
'per-tensor' (`foreach=False`, the readable loop) -- next to torch's SGD, SGD-momentum, AdamW and AdamW-amsgrad
(foreach and fused) and floors (streaming `_foreach_add_`, and one pow pass on a scratch copy: `_foreach_pow_` eager and `pow_` compiled). It times
`step()` round-robin (one step of each per round, so that a change in machine load hits all alike) and reports the
median over rounds after warm-up.
Each of ours is divided by its FLOOR: the best torch step that keeps as many parameter-sized state buffers (torch has
no 4-buffer step: Adan is compared with fused AdamW-amsgrad's 3), plus one pow pass where the method needs a
fractional power per element (METHOD_COST below says which and why). Targets: fused <= 1.25x floor, default <= 1.6x.

Also, per block: the gradient transforms' overhead on torch's fused SGD-momentum (`with_transforms(SGD, T(fused=True))`
over the same step without transforms, target <= 1.25: a pass of its own, since torch's kernel cannot take the
transform in) and on our fused Lion, whose step moves the same five arrays as SGD-momentum's (`with_transforms(Lion,
T(fused=True))(fused=True)`: a per-tensor transform runs inside the compiled step), in the same rounds, on a second
set of matrix-shaped parameters whose gradients are put back untimed after each step; the peak memory a step allocates beyond
parameters, gradients and state (CPU: the allocation events of torch.profiler; CUDA: max_memory_allocated), target <=
one parameter-sized buffer; each compiled step's first call (its cold compile: the run starts on an empty Inductor
cache in a fresh TORCHINDUCTOR_CACHE_DIR, and dynamo is reset for every block as a fresh process would be) and any
recompilation during the timed rounds; on CUDA, 20 steps of each of ours under set_sync_debug_mode('error'). After the
blocks a second process on the same cache dir times each compiled step's first call again: the cached start-up.
Where a target is missed, torch.profiler tables of that step go to <out>/profile_<tag>.txt.

Outputs: bench_<tag>.csv (one row per block and step), bench_<tag>_compile.csv (cold and cached first steps),
bench_<tag>_meta.json (machine, load averages, floors, bytes moved, targets, what was skipped and why),
bench_<tag>.png (time per element against bytes moved per element), profile_<tag>.txt.
"""
import argparse, contextlib, csv, dataclasses, datetime, functools, gc, json, os, platform, signal, statistics, subprocess, sys, tempfile, time
from pathlib import Path
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gradual_opt.registry import registry          # noqa: E402
from gradual_opt.transforms import with_transforms   # noqa: E402
from gradual_opt.baselines import Lion               # noqa: E402

METHODS = {m.name: m for m in registry('optimizer')}         # every registered optimizer is benchmarked
TRANSFORMS = {m.name: m for m in registry('transform')}

# What each method must do per element, from its math. `pow`: it needs a fractional power per element (then its floor
# adds one pow pass). `arrays`: the parameter-sized arrays it must read + write per step at the least (bytes moved per
# element = arrays x element size); a global or per-tensor statistic needed before any parameter moves costs one more
# read of what it is taken over. `ref`: torch's fused step the GPU target compares with (Adam-like vs SGD-like).
METHOD_COST = {
    'GSGD':          dict(pow=True, arrays=4, ref='SGD-mom fused',
                          why="sign(g)|g|^e, e fractional; Eq. 4's global factor needs the norms of g and |g|^e first: read g, then read p, g, write p"),
    'GSGD-momentum': dict(pow=True, arrays=6, ref='SGD-mom fused',
                          why="|d|^e on the heavy-ball buffer d; sweep 1 reads g, d, writes d and takes the norms, sweep 2 reads p, d, writes p"),
    'GAdam':         dict(pow=True, arrays=7, ref='AdamW fused',
                          why="v^q with q from 1/2 to 0, fractional; reads p, g, m, sqrt(v), writes p, m, sqrt(v)"),
    'LPSGD':         dict(pow=True, arrays=3, ref='SGD-mom fused', why="(|g|+eps)^rho, rho fractional; reads p, g, writes p"),
    'LPSGDM':        dict(pow=True, arrays=5, ref='SGD-mom fused', why="(|m|+eps)^rho on the EMA m; reads p, g, m, writes p, m"),
    'S3':            dict(pow=True, arrays=8, ref='AdamW fused',
                          why="the p-th root of the p-th moment (p = 3: the cube is two products, the root a fractional power); each tensor's max|g| first: read g, then read p, g, m, s, write p, m, s"),
    'S3-untied':     dict(pow=True, arrays=8, ref='AdamW fused', why="as S3"),
    'Lion':          dict(pow=False, arrays=5, ref='SGD-mom fused', why="a sign, no power; reads p, g, m, writes p, m"),
    'Adan':          dict(pow=False, arrays=11, ref='AdamW fused',
                          why="a square root only, as AdamW; reads p, g, m, the difference moment, n, the previous g, writes all but g"),
    'AGRAdamW':      dict(pow=False, arrays=8, ref='AdamW fused',
                          why="a square root only, as AdamW; AGR's per-tensor sum|g| first: read g, then AdamW's 7"),
}
TORCH_COST = {'SGD': 3, 'SGD-mom': 5, 'AdamW': 7, 'AdamW-amsgrad': 9, 'stream': 3, 'pow pass': 2, 'pow pass compiled': 2}   # arrays read + written
TORCH_BUFFERS = {'SGD': 0, 'SGD-mom': 1, 'AdamW': 2, 'AdamW-amsgrad': 3}
TARGETS = dict(fused=1.25, default=1.6, transform=1.25, gpu=1.2, extra_buffers=1.0)
ISSUE_TARGETS = ('GSGD', 'GSGD-momentum', 'GAdam', 'LPSGD', 'LPSGDM', 'S3', 'Lion', 'Adan')   # the issue's list
PATHS = {'default': {}, 'per-tensor': {'foreach': False}, 'fused': {'fused': True}}
DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}
SCHEDULE = dict(total_steps=10**6, step=300_000)    # schedules at 30%: exponents and powers are fractional
DEVICE = 'cpu'

def cost(name):
    "METHOD_COST's entry for `name`; a method not listed is assumed to need no power and to move 3 + 2 x buffers arrays."
    if name in METHOD_COST: return METHOD_COST[name]
    nb = METHODS[name].buffers
    return dict(pow=False, arrays=3 + 2*nb, ref='AdamW fused' if nb >= 2 else 'SGD-mom fused',
                why='not in METHOD_COST (tools/benchmark.py): assumed no fractional power, reads p, g, state, writes p, state')

def floor_text(name):
    "The floor of one of ours, in words."
    nb = METHODS[name].buffers
    k = max(b for b in TORCH_BUFFERS.values() if b <= nb)
    steps = ' / '.join(f'{f} {p}' for f, b in TORCH_BUFFERS.items() for p in ('foreach', 'fused') if b == k and not (f == 'AdamW-amsgrad' and p == 'foreach'))
    s = f'best of torch {steps} ({k} buffer{"s" if k != 1 else ""})'
    if k != nb: s += f'; torch has no {nb}-buffer step, its {k}-buffer one stands in'
    return s + (' + one pow pass (the faster of torch\'s eager _foreach_pow_ and a compiled pow_)' if cost(name)['pow'] else ' (no pow pass)')

def label(k): return f'{k} large' if k <= 64 else f'{k} small'
def sync():
    if DEVICE != 'cpu': torch.cuda.synchronize()

def make_params(n, k, dtype=torch.float32, seed=0, matrices=False):
    "`k` tensors of n/k elements with fixed gradients (`matrices`: 2-d, rows of 100 or 1000 entries, for the transforms)."
    m = max(1, n // k)
    c = 1000 if m >= 1_000_000 else 100
    if matrices: m = max(c, m // c * c)
    g = torch.Generator(DEVICE).manual_seed(seed)
    ps = [torch.nn.Parameter(torch.randn((m // c, c) if matrices else (m,), generator=g, device=DEVICE, dtype=dtype)) for _ in range(k)]
    for p in ps: p.grad = torch.randn(p.shape, generator=g, device=DEVICE, dtype=dtype) * 1e-2
    return ps

@dataclasses.dataclass
class Entry:
    kind: str                 # 'ours', 'torch', 'floor', 'transform' (a transformed step) or 'base' (the same step without)
    family: str
    path: str
    buffers: int | None
    step: object
    opt: object = None
    after: object = None      # run untimed after each step (the transforms' gradients are put back)
    first_s: float | None = None
    graphs: int = 0           # graphs compiled by the first step
    recompiles: int = 0       # graphs compiled during the timed rounds (should be 0)
    peak: int | None = None   # bytes allocated at the peak of one step, beyond what was allocated before it
    net: int | None = None
    host_sync: str = ''

def build_ours(m, ps, path):
    "One of ours on `path`, at lr 1e-3 with the registry's test settings; schedules at 30% (fractional powers)."
    kw = {k: v for k, v in m.test_kwargs.items() if k not in ('lr', 'total_steps')}
    opt = m.cls(ps, lr=1e-3, **kw, **PATHS[path])
    if getattr(m.cls, 'scheduled', False) and 'total_steps' in opt.defaults: opt.set_schedule(**SCHEDULE)
    return opt

def build_torch(ps):
    "torch's steps, by (family, path)."
    mk = {('SGD', 'foreach'): lambda: torch.optim.SGD(ps, lr=1e-3, foreach=True),
          ('SGD', 'fused'): lambda: torch.optim.SGD(ps, lr=1e-3, fused=True),
          ('SGD-mom', 'foreach'): lambda: torch.optim.SGD(ps, lr=1e-3, momentum=0.9, foreach=True),
          ('SGD-mom', 'fused'): lambda: torch.optim.SGD(ps, lr=1e-3, momentum=0.9, fused=True),
          ('AdamW', 'foreach'): lambda: torch.optim.AdamW(ps, lr=1e-3, foreach=True),
          ('AdamW', 'fused'): lambda: torch.optim.AdamW(ps, lr=1e-3, fused=True),
          ('AdamW-amsgrad', 'fused'): lambda: torch.optim.AdamW(ps, lr=1e-3, amsgrad=True, fused=True)}
    return {k: f for k, f in mk.items()}

def floors(ps, e=0.3):
    "Streaming `_foreach_add_` (read 2 arrays, write 1) and one in-place pow pass on a scratch copy (read 1, write 1), eager and compiled."
    gs = [p.grad for p in ps]
    scratch, scratch2 = [g.abs().add_(0.5) for g in gs], [g.abs().add_(0.5) for g in gs]
    flip, ex = [e], torch.tensor(e, device=gs[0].device)
    def stream(): torch._foreach_add_([p.data for p in ps], gs, alpha=-1e-9)
    def pow_pass(): torch._foreach_pow_(scratch, flip[0]); flip[0] = 1/flip[0]   # e and 1/e alternately: values stay put
    @torch.compile(fullgraph=True)
    def pow_each(xs, e):
        for x in xs: x.pow_(e)
    def pow_compiled(): pow_each(scratch2, ex); ex.reciprocal_()
    # Inductor's vectorised pow is faster than torch's eager one on CPU: the pow floor is the faster of the two.
    return {'stream': stream, 'pow pass': pow_pass, 'pow pass compiled': pow_compiled}

def transform_sets():
    "name -> function(path) -> list of transforms: each registered transform, and all of them in registry order."
    out = {name: (lambda path, m=m: [m.cls(**m.test_kwargs, **PATHS[path])]) for name, m in TRANSFORMS.items()}
    if len(TRANSFORMS) > 1: out['all'] = lambda path: [m.cls(**m.test_kwargs, **PATHS[path]) for m in TRANSFORMS.values()]
    return out

def state_bytes(opt, n):
    "(bytes per parameter in full-size state tensors, bytes per parameter in 0-d state tensors such as step counters)."
    full = small = 0
    for st in opt.state.values():
        for v in st.values():
            if not torch.is_tensor(v): continue
            if v.dim() > 0: full += v.nbytes
            else: small += v.nbytes
    return full/n, small/n

def graphs_compiled():
    try:
        from torch._dynamo.utils import counters
        return counters['stats']['unique_graphs']
    except Exception: return 0

_PROFILER_WARNED = False

@contextlib.contextmanager
def quiet_stderr():
    "File descriptor 2 to /dev/null: the profiler's C++ layer logs every start and stop there."
    sys.stderr.flush(); saved = os.dup(2); null = os.open(os.devnull, os.O_WRONLY); os.dup2(null, 2); os.close(null)
    try: yield
    finally: os.dup2(saved, 2); os.close(saved)

def step_memory(fn):
    "(peak, net) bytes allocated during `fn()` beyond what was allocated before it: CUDA's allocator stats, or the allocation events of torch.profiler on CPU."
    if DEVICE != 'cpu':
        sync(); torch.cuda.reset_peak_memory_stats(); m0 = torch.cuda.memory_allocated()
        fn(); sync()
        return torch.cuda.max_memory_allocated() - m0, torch.cuda.memory_allocated() - m0
    try:                                                       # the profiler's C++ layer: no Python post-processing of every op
        from torch.autograd import ProfilerConfig, ProfilerState, ProfilerActivity, _prepare_profiler, _enable_profiler, _disable_profiler
        from torch._C._profiler import _ExperimentalConfig
        cfg = ProfilerConfig(ProfilerState.KINETO, False, True, False, False, False, _ExperimentalConfig())
        if not _PROFILER_WARNED:                               # its warning (once per process) about a block freed that it never saw allocated
            with quiet_stderr():
                x = torch.empty(1); _prepare_profiler(cfg, {ProfilerActivity.CPU}); _enable_profiler(cfg, {ProfilerActivity.CPU}); del x; _disable_profiler()
            globals()['_PROFILER_WARNED'] = True
        with quiet_stderr(): _prepare_profiler(cfg, {ProfilerActivity.CPU}); _enable_profiler(cfg, {ProfilerActivity.CPU})
        try: fn()
        finally:
            with quiet_stderr(): events = _disable_profiler().events()
    except (ImportError, TypeError, AttributeError):       # another torch: the public profiler
        from torch.profiler import profile, ProfilerActivity
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof: fn()
        events = prof.profiler.kineto_results.events()
    allocs = [(e.start_ns(), e.nbytes()) for e in events if e.name() == '[memory]' and e.device_type() == torch._C._autograd.DeviceType.CPU]
    cur = peak = 0
    for _, b in sorted(allocs): cur += b; peak = max(peak, cur)
    return peak, cur

def sync_check(fn, after, steps):
    "'ok' if `steps` calls of `fn` run under torch.cuda.set_sync_debug_mode('error'), else the error."
    sync(); torch.cuda.set_sync_debug_mode('error')
    try:
        for _ in range(steps):
            fn()
            if after: after()
        return 'ok'
    except RuntimeError as ex: return 'host sync: ' + str(ex).split('\n')[0][:200]
    finally: torch.cuda.set_sync_debug_mode(0); sync()

def time_round_robin(entries, warmup, reps):
    "Median seconds per call of each entry, calling them in turn `warmup + reps` times; counts graphs compiled during the rounds."
    ts = {k: [] for k in entries}
    for r in range(warmup + reps):
        for k, e in entries.items():
            g0 = graphs_compiled(); sync()
            t0 = time.perf_counter(); e.step(); sync()
            dt = time.perf_counter() - t0
            if e.after: e.after()
            e.recompiles += graphs_compiled() - g0
            if r >= warmup: ts[k].append(dt)
    return {k: statistics.median(v) for k, v in ts.items()}

def profile_table(fn, after, steps=2, row_limit=12):
    "torch.profiler's table (self time per op) of `steps` calls of `fn`."
    from torch.profiler import profile, ProfilerActivity
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if DEVICE != 'cpu' else [])
    with quiet_stderr(), profile(activities=acts) as prof:     # (the profiler logs each start and stop on stderr)
        for _ in range(steps):
            fn(); sync()
            if after:
                with torch.profiler.record_function('(benchmark: restore the gradients, not part of the step)'): after()
    ka = prof.key_averages()
    if DEVICE == 'cpu': return ka.table(sort_by='self_cpu_time_total', row_limit=row_limit)
    try: return ka.table(sort_by='self_device_time_total', row_limit=row_limit)
    except Exception: return ka.table(sort_by='self_cuda_time_total', row_limit=row_limit)

@contextlib.contextmanager
def time_limit(seconds):
    "Raise TimeoutError in this (main) thread after `seconds` (a compile that would take the rest of the run)."
    if not seconds or not hasattr(signal, 'SIGALRM'): yield; return
    def fire(*_): raise TimeoutError(f'first step not done after {seconds} s (--compile-timeout)')
    old = signal.signal(signal.SIGALRM, fire); signal.alarm(int(seconds))
    try: yield
    finally: signal.alarm(0); signal.signal(signal.SIGALRM, old)

def bench_block(n, k, dtype, threads, paths, transform_paths, warmup, reps, log=print, profile='missed', sync_steps=0, compile_timeout=None):
    "One block: every step on one set of parameters; returns (rows, skipped, profiles)."
    if DEVICE == 'cpu' and threads: torch.set_num_threads(threads)
    torch._dynamo.reset()                                      # compile for this thread count and shape, as a fresh process would
    dname = next(d for d, t in DTYPES.items() if t == dtype)
    where = f'{threads}t ' if DEVICE == 'cpu' else ''
    where += f'{label(k)} {dname}'
    ps = make_params(n, k, dtype); n = sum(p.numel() for p in ps)
    entries, skipped = {}, []
    def add(key, build, first=True):
        "Build an entry, run its first step (the compile, for a compiled one); a failure skips it with the reason printed."
        try:
            e = build()
            if first:
                g0 = graphs_compiled(); sync(); t0 = time.perf_counter()
                with time_limit(compile_timeout): e.step(); sync()
                e.first_s = time.perf_counter() - t0
                if e.after: e.after()
                e.graphs = graphs_compiled() - g0
                if e.graphs: log(f'    [{where}] {key[0]} {key[1]}: first step {e.first_s:.1f} s ({e.graphs} graph{"s" if e.graphs != 1 else ""} compiled)')
            entries[key] = e
        except Exception as ex:
            why = f'{type(ex).__name__}: {str(ex).splitlines()[0][:160] if str(ex) else ""}'
            skipped.append(dict(block=where, step=f'{key[0]} {key[1]}', why=why)); log(f'    [{where}] skipped {key[0]} {key[1]}: {why}')
    for name, m in METHODS.items():
        for path in paths:
            add((name, path), lambda: (lambda o: Entry('ours', name, path, m.buffers, o.step, o))(build_ours(m, ps, path)))
    for (fam, path), mk in build_torch(ps).items():
        add((fam, path), lambda: (lambda o: Entry('torch', fam, path, TORCH_BUFFERS[fam], o.step, o))(mk()))
    for name, f in floors(ps).items(): add(('floor', name), lambda: Entry('floor', 'floor', name, None, f))
    if transform_paths:                                        # a second set: the transforms rewrite its gradients in place
        ps2 = make_params(n, k, dtype, seed=1, matrices=True); g0 = [p.grad.clone() for p in ps2]
        restore = lambda: torch._foreach_copy_([p.grad for p in ps2], g0)
        bases = {'SGD-mom fused': lambda *ts: with_transforms(torch.optim.SGD, *ts)(ps2, lr=1e-3, momentum=0.9, fused=True),
                 'Lion fused': lambda *ts: with_transforms(Lion, *ts)(ps2, lr=1e-4, fused=True)}
        for base, mk_opt in bases.items():
            tpaths = transform_paths if base == 'SGD-mom fused' else [p for p in transform_paths if p == 'fused']   # in-step: fused only
            if not tpaths: continue
            add((base, 'no transform'), lambda: (lambda o: Entry('base', base, 'no transform', 1, o.step, o, restore))(mk_opt()))
            for name, mk in transform_sets().items():
                for path in tpaths:
                    add((f'{base} + {name}', path), lambda: (lambda o: Entry('transform', f'{base} + {name}', path, 1, o.step, o, restore))(mk_opt(*mk(path))))
    for key, e in entries.items():                             # peak memory of one step beyond parameters, gradients, state
        if e.kind == 'floor': continue
        e.peak, e.net = step_memory(e.step)
        if e.after: e.after()
    if sync_steps and DEVICE != 'cpu':                         # proof of no host synchronisation, after the first steps
        for key, e in entries.items():
            if e.kind in ('ours', 'transform', 'base'): e.host_sync = sync_check(e.step, e.after, sync_steps)
    load0 = os.getloadavg()[0]
    med = time_round_robin(entries, warmup, reps)
    load = round((load0 + os.getloadavg()[0])/2, 2)
    best = {}                                                  # best torch step per number of state buffers
    for key, e in entries.items():
        if e.kind == 'torch' and (e.buffers not in best or med[key] < best[e.buffers][0]): best[e.buffers] = (med[key], f'{e.family} {e.path}')
    esize = torch.empty((), dtype=dtype).element_size()
    rows, profiles = [], []
    stream_key = ('floor', 'stream')
    for key, e in entries.items():
        t = med[key]
        r = dict(device=DEVICE, dtype=dname, threads=threads if DEVICE == 'cpu' else '', layout=label(k), tensors=k, params=n,
                 kind=e.kind, optimizer=e.family, path=e.path, state_buffers=e.buffers if e.buffers is not None else '',
                 ms=round(t*1e3, 4), ns_per_param=round(t*1e9/n, 5), arrays_moved='', bytes_moved_per_param='', GBps='',
                 floor='', floor_ms='', ratio_to_floor='', target='', met='', issue_target='',
                 ref='', ratio_to_ref='', ref_met='', base='', ratio_to_base='',
                 state_bytes_per_param='', documented_state_bytes_per_param='', extra_peak_bytes_per_param='', extra_net_bytes_per_param='',
                 extra_met='', first_step_s=round(e.first_s, 3) if e.graphs else '', graphs_first_step=e.graphs or '',
                 recompiles=e.recompiles, host_sync=e.host_sync, loadavg=load)
        arrays = cost(e.family)['arrays'] if e.kind == 'ours' else TORCH_COST.get(e.family if e.kind == 'torch' else e.path) if e.kind in ('torch', 'floor') else None
        if arrays: r.update(arrays_moved=arrays, bytes_moved_per_param=arrays*esize, GBps=round(arrays*esize*n/t/1e9, 2))
        if e.opt is not None:
            full, _ = state_bytes(e.opt, n)
            r.update(state_bytes_per_param=round(full, 4), documented_state_bytes_per_param=e.buffers*esize,
                     extra_peak_bytes_per_param=round(e.peak/n, 4), extra_net_bytes_per_param=round(e.net/n, 4),
                     extra_met=e.peak <= TARGETS['extra_buffers']*esize*n)
        if e.kind == 'ours' and best:
            c = cost(e.family); kb = max((b for b in best if b <= e.buffers), default=None)
            pows = [med[k] for k in (('floor', 'pow pass'), ('floor', 'pow pass compiled')) if k in med]
            if kb is not None and (not c['pow'] or pows):
                fl = best[kb][0] + (min(pows) if c['pow'] else 0)
                r.update(floor=best[kb][1] + (' + pow pass' if c['pow'] else ''), floor_ms=round(fl*1e3, 4), ratio_to_floor=round(t/fl, 4),
                         issue_target=e.family in ISSUE_TARGETS)
                if e.path in ('fused', 'default'): r.update(target=TARGETS[e.path], met=t/fl <= TARGETS[e.path])
            refk = tuple(c['ref'].split(' '))
            if DEVICE != 'cpu' and refk in med:
                r.update(ref=c['ref'], ratio_to_ref=round(t/med[refk], 4))
                if e.path == 'fused': r.update(ref_met=t/med[refk] <= TARGETS['gpu'])
        if e.kind == 'transform':
            bk = (e.family.split(' + ')[0], 'no transform')
            if bk in med:
                r.update(base=bk[0], ratio_to_base=round(t/med[bk], 4))
                if e.path == 'fused': r.update(target=TARGETS['transform'], met=t/med[bk] <= TARGETS['transform'])
        rows.append(r)
        missed = r['met'] is False or r['ref_met'] is False
        if profile == 'missed' and missed:
            profiles.append(f"=== {e.family} {e.path}, {where}, {n:,} parameters, ratio {r['ratio_to_floor'] or r['ratio_to_base']} "
                            f"(target {r['target']}), 2 steps\n{profile_table(e.step, e.after)}\n")
    del entries, ps
    gc.collect()
    if DEVICE != 'cpu': torch.cuda.empty_cache()
    return rows, skipped, profiles

def kernel_census(names=None):
    """Each registry optimizer's compiled (fused) step on two small tensors, after its first step: the graphs a steady-state
    step compiles, the kernels Inductor writes for each (C++ on CPU, Triton on CUDA), and the library calls left in them
    (an `aten` op Inductor could not lower runs as a separate pass over its tensors). Inductor's caches are off, so every
    graph is compiled, and seen, here."""
    from torch._inductor.utils import run_and_get_code
    import torch._inductor.config as icfg
    import re, warnings
    kern = re.compile(r'^(?:cpp_fused\w*|triton_\w+) = async_compile\.(?:cpp_pybinding|triton)\(', re.M)
    lib = re.compile(r'(?:torch\.ops\.aten\.|extern_kernels\.)([\w.]+)\(')
    rows = []
    for name, m in METHODS.items():
        if names and name not in names: continue
        g = torch.Generator(DEVICE).manual_seed(0)
        ps = [torch.nn.Parameter(torch.randn(s, generator=g, device=DEVICE)) for s in ((300, 100), (100,))]
        for q in ps: q.grad = torch.randn(q.shape, generator=g, device=DEVICE)
        opt = build_ours(m, ps, 'fused'); opt.step()            # the first step (GSGD-momentum's fills its buffer: a graph of its own)
        with icfg.patch(force_disable_caches=True), quiet_stderr(), warnings.catch_warnings():
            warnings.simplefilter('ignore')                       # 'dynamo_pgo force disabled by ...force_disable_caches'
            _, codes = run_and_get_code(lambda: (opt.step(), opt.step()))
        rows.append(dict(optimizer=name, graphs=len(codes), kernels=[len(kern.findall(c)) for c in codes],
                         library_calls=sorted({x for c in codes for x in lib.findall(c)})))
    torch._dynamo.reset()
    return rows

def census_table(rows):
    "kernel_census as text."
    lines = ["fused steps, steady state (two small tensors): graphs compiled, Inductor kernels per graph, library calls left in them",
             f"{'optimizer':15s} {'graphs':>6s} {'kernels':>10s}  library calls"]
    for r in rows: lines.append(f"{r['optimizer']:15s} {r['graphs']:6d} {str(r['kernels']):>10s}  {', '.join(r['library_calls']) or 'none'}")
    return '\n'.join(lines)

def inductor_startup():
    "Seconds to compile and run a trivial function: Inductor's one-time cost in a process (workers, compiler checks)."
    t0 = time.perf_counter()
    try: torch.compile(lambda x: x*2 + 1, fullgraph=True)(torch.ones(8, device=DEVICE)); sync()
    except Exception as ex: print(f'torch.compile does not work here: {type(ex).__name__}: {ex}'); return None
    return round(time.perf_counter() - t0, 2)

def startup_child(spec):
    "In a fresh process on the run's cache dir: each compiled step's first call (the cached start-up). Prints one JSON line."
    global DEVICE
    DEVICE = spec['device']
    if DEVICE == 'cpu': torch.set_num_threads(spec['threads'])
    out = dict(inductor_startup_s=inductor_startup(), steps=[])
    for k in spec['layouts']:
        torch._dynamo.reset()
        ps = make_params(spec['params'], k, DTYPES[spec['dtype']])
        for name in spec['names']:
            opt = None
            try:
                opt = build_ours(METHODS[name], ps, 'fused')
                g0 = graphs_compiled(); sync(); t0 = time.perf_counter(); opt.step(); sync(); t1 = time.perf_counter() - t0
                out['steps'].append(dict(optimizer=name, tensors=k, first_step_s=round(t1, 3), graphs=graphs_compiled() - g0))
            except Exception as ex: out['steps'].append(dict(optimizer=name, tensors=k, error=f'{type(ex).__name__}: {ex}'[:200]))
            del opt
    print('STARTUP ' + json.dumps(out))

def machine():
    "A short description of this machine and run."
    cpu = platform.processor() or platform.machine()
    try: cpu = next(l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name'))
    except Exception: pass
    return dict(cpu=cpu, cores=os.cpu_count(), torch=torch.__version__, python=platform.python_version(), device=DEVICE,
                gpu=torch.cuda.get_device_name() if DEVICE != 'cpu' else None,
                date=datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'))

def compile_rows(rows, startup):
    "Cold first steps (from the blocks) and cached start-up (from the second process), per compiled step."
    out, cached = [], {(s['optimizer'], s['tensors']): s for s in (startup or {}).get('steps', [])}
    for r in rows:
        if r['path'] != 'fused' or r['kind'] != 'ours' or r['first_step_s'] == '': continue
        same = startup and (r['threads'] or None) == startup.get('threads') and r['dtype'] == startup.get('dtype')
        c = cached.get((r['optimizer'], r['tensors']), {}) if same else {}
        out.append(dict(device=r['device'], dtype=r['dtype'], threads=r['threads'], layout=r['layout'], tensors=r['tensors'], params=r['params'],
                        optimizer=r['optimizer'], cold_first_step_s=r['first_step_s'], graphs=r['graphs_first_step'],
                        cached_first_step_s=c.get('first_step_s', ''), steady_step_ms=r['ms'], recompiles_in_rounds=r['recompiles']))
    return out

def load(out, tag):
    "(rows, compile rows, meta) of a run written by `run`, with numbers and flags typed as `run` returns them."
    def typed(v):
        if v in ('True', 'False'): return v == 'True'
        try: return int(v)
        except ValueError: pass
        try: return float(v)
        except ValueError: return v
    read = lambda f: [{k: typed(v) for k, v in r.items()} for r in csv.DictReader(open(f))] if Path(f).exists() else []
    out = Path(out)
    return read(out/f'bench_{tag}.csv'), read(out/f'bench_{tag}_compile.csv'), json.loads((out/f'bench_{tag}_meta.json').read_text())

def write_csv(path, rows):
    if not rows: return
    with open(path, 'w', newline='') as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0])); w.writeheader(); w.writerows(rows)

def run(params=25_000_000, layouts=(4, 2500), threads=(2, 1), dtypes=('fp32',), paths=('default', 'fused'),
        transform_paths=('fused', 'default'), warmup=1, reps=6, out='results/perf', tag='cpu', startup=True, profile='missed',
        sync_steps=0, time_budget=None, cache_dir=None, compile_timeout=None, log=functools.partial(print, flush=True)):
    "The whole benchmark; writes the outputs into `out` after every block; returns (rows, compile rows, meta)."
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    if not cache_dir and any(p == 'fused' for p in (*paths, *transform_paths)):
        cache_dir = tempfile.mkdtemp(prefix='bench_inductor_')          # an empty Inductor cache: the first steps are cold compiles
    if cache_dir: os.environ['TORCHINDUCTOR_CACHE_DIR'] = str(cache_dir)
    os.environ['TORCHINDUCTOR_FX_GRAPH_CACHE'] = '1'
    meta = machine()
    meta.update(loadavg_start=os.getloadavg(), params=params, layouts=list(layouts), threads=list(threads) if DEVICE == 'cpu' else None,
                dtypes=list(dtypes), paths=list(paths), transform_paths=list(transform_paths), warmup=warmup, reps=reps,
                targets=TARGETS, issue_targets=list(ISSUE_TARGETS), floors={name: floor_text(name) for name in METHODS},
                method_cost={name: cost(name) for name in METHODS}, torch_cost=TORCH_COST, torch_buffers=TORCH_BUFFERS,
                transforms=list(transform_sets()), cache_dir=str(cache_dir) if cache_dir else None, skipped=[], notes=[])
    log(f"load average at start: {' '.join(f'{x:.2f}' for x in meta['loadavg_start'])} ({meta['cpu']}, {meta['cores']} cores, torch {meta['torch']}, {DEVICE})")
    if DEVICE == 'cpu' and meta['loadavg_start'][0] > 0.5:
        log(f"  warning: the machine is not idle (load {meta['loadavg_start'][0]:.2f}): other jobs share the cores, and with 2 threads a "
            "descheduled thread stalls every parallel kernel; the ratios will be noisy")
    if any(p == 'fused' for p in (*paths, *transform_paths)):
        meta['inductor_startup_cold_s'] = inductor_startup(); log(f"Inductor start-up (a trivial compile, once per process): {meta['inductor_startup_cold_s']} s")
    if 'fused' in paths:
        meta['kernel_census'] = kernel_census(); log(census_table(meta['kernel_census']))
    rows, profiles = [], []
    def save(startup_out=None):
        meta['loadavg_end'] = os.getloadavg(); meta['wall_s'] = round(time.time() - t_start, 1)
        write_csv(out/f'bench_{tag}.csv', rows)
        write_csv(out/f'bench_{tag}_compile.csv', compile_rows(rows, startup_out))
        (out/f'bench_{tag}_meta.json').write_text(json.dumps(meta, indent=1))
        if profiles: (out/f'profile_{tag}.txt').write_text(''.join(profiles))
        import matplotlib; import matplotlib.pyplot as plt
        if rows: plt.close(plot(rows, out/f'bench_{tag}.png'))
    blocks = ([(d, t, k) for d in dtypes for t in threads for k in layouts] if DEVICE == 'cpu' else
              [(d, None, k) for k in layouts for d in dtypes])        # CUDA: both dtypes of the first layout first (a time budget cuts the rest)
    for d, t, k in blocks:
        if time_budget and time.time() - t_start > time_budget:
            why = f'time budget of {time_budget} s spent'; meta['skipped'].append(dict(block=f'{d} {t} {label(k)}', step='all', why=why)); log(f'skipped block {d} {t} {label(k)}: {why}'); continue
        t0 = time.time()
        log(f'block: {d}, {f"{t} thread(s), " if DEVICE == "cpu" else ""}{label(k)} ({params:,} parameters)')
        rs, sk, pr = bench_block(params, k, DTYPES[d], t, paths, transform_paths, warmup, reps, log, profile, sync_steps, compile_timeout)
        rows += rs; meta['skipped'] += sk; profiles += pr
        log(f'  {time.time() - t0:.0f} s, load {rs[0]["loadavg"] if rs else "?"}'); save()
    startup_out = None
    fused_names = sorted({r['optimizer'] for r in rows if r['kind'] == 'ours' and r['path'] == 'fused' and r['first_step_s'] != ''}, key=list(METHODS).index)
    if startup and fused_names and not (time_budget and time.time() - t_start > time_budget):
        tmax = max(threads) if DEVICE == 'cpu' else None
        spec = dict(device=DEVICE, threads=tmax, params=params, layouts=list(layouts), dtype=dtypes[0], names=fused_names)
        log(f'cached start-up: a second process on the same Inductor cache ({dtypes[0]}{f", {tmax} threads" if tmax else ""})')
        t0 = time.time()
        p = subprocess.run([sys.executable, __file__, '--startup-child', json.dumps(spec)], capture_output=True, text=True,
                           env={**os.environ, 'TORCHINDUCTOR_CACHE_DIR': str(cache_dir), 'TORCHINDUCTOR_FX_GRAPH_CACHE': '1'})
        line = next((l for l in p.stdout.splitlines() if l.startswith('STARTUP ')), None)
        if line: startup_out = dict(json.loads(line[8:]), dtype=dtypes[0], threads=tmax, process_s=round(time.time() - t0, 1)); meta['startup'] = startup_out
        else: meta['notes'].append(f'cached start-up process failed: {p.stderr[-500:]}'); log(meta['notes'][-1])
    elif startup and not fused_names: meta['notes'].append('no compiled step ran: no compile times')
    save(startup_out)
    compiles = compile_rows(rows, startup_out)
    log(f"load average at end: {' '.join(f'{x:.2f}' for x in meta['loadavg_end'])}; wall {meta['wall_s']} s")
    return rows, compiles, meta

# ---- reports --------------------------------------------------------------------------------------------------------
def _f(x, fmt='{:.2f}'): return '' if x in ('', None) else fmt.format(x)
def _mark(r): return '' if r['met'] == '' else ' ok' if r['met'] else ' MISS'

def floors_table(meta):
    "Each of ours: its floor in words, whether it takes a pow pass and why, and the arrays it moves."
    lines = ['floors (each of ours divided by: best torch step with as many state buffers [+ one pow pass]); bytes moved = arrays x element size']
    for name, txt in meta['floors'].items():
        c = meta['method_cost'][name]
        lines.append(f"  {name:14s} {txt}; {c['arrays']} arrays: {c['why']}")
    return '\n'.join(lines)

def ratio_table(rows):
    "default/floor and fused/floor for each of ours, per block, with the targets (fused <= 1.25, default <= 1.6)."
    ours = [r for r in rows if r['kind'] == 'ours']
    blocks = list(dict.fromkeys((r['dtype'], r['threads'], r['layout']) for r in rows))
    names = list(dict.fromkeys(r['optimizer'] for r in ours))
    get = {(r['dtype'], r['threads'], r['layout'], r['optimizer'], r['path']): r for r in ours}
    head = f"{'optimizer':14s}" + ''.join(f" | {(f'{t}t ' if t != '' else '') + lay + ('' if d == 'fp32' else ' ' + d):>25s}" for d, t, lay in blocks)
    lines = [f"ratio to the floor: default / fused (targets: default <= {TARGETS['default']}, fused <= {TARGETS['fused']}; "
             f"* = not in the issue's list)", head, f"{'':14s}" + ''.join(f" | {'default':>12s} {'fused':>12s}" for _ in blocks)]
    for name in names:
        cells = []
        for b in blocks:
            c = []
            for path in ('default', 'fused'):
                r = get.get((*b, name, path))
                c.append(f"{r['ratio_to_floor']:.2f}{_mark(r)}" if r and r['ratio_to_floor'] != '' else 'n/a')
            cells.append(f" | {c[0]:>12s} {c[1]:>12s}")
        lines.append(f"{name + ('' if name in ISSUE_TARGETS else ' *'):14s}" + ''.join(cells))
    met = [r['met'] for r in ours if r['met'] != '' and r['optimizer'] in ISSUE_TARGETS]
    lines.append(f"targets met (issue's list): {sum(met)} of {len(met)}")
    return '\n'.join(lines)

def block_table(rows, dtype, threads, layout):
    "One block in detail: step times, floors, ratios, memory."
    rs = [r for r in rows if (r['dtype'], r['threads'], r['layout']) == (dtype, threads, layout) and r['kind'] in ('ours', 'torch', 'floor')]
    if not rs: return ''
    lines = [f"-- {dtype}, {f'{threads} thread(s), ' if threads != '' else ''}{layout} ({rs[0]['params']:,} parameters), load {rs[0]['loadavg']}",
             f"{'step':26s} {'ms':>8s} {'ns/el':>7s} {'B/el':>5s} {'GB/s':>6s} {'floor':>28s} {'/floor':>7s} {'state B/el':>10s} {'extra peak B/el':>15s}"]
    for r in rs:
        lines.append(f"{r['optimizer'] + ' ' + r['path']:26s} {r['ms']:8.2f} {r['ns_per_param']:7.3f} {_f(r['bytes_moved_per_param'], '{}'):>5s} "
                     f"{_f(r['GBps'], '{:.1f}'):>6s} {r['floor']:>28s} {_f(r['ratio_to_floor']) + _mark(r) if r['kind'] == 'ours' else '':>7s} "
                     f"{_f(r['state_bytes_per_param'], '{:.1f}'):>10s} {_f(r['extra_peak_bytes_per_param'], '{:.2f}') + ('' if r['extra_met'] in ('', True) else ' MISS'):>15s}")
    return '\n'.join(lines)

TRANSFORM_BASES = {'SGD-mom fused': "in front of torch's fused SGD-momentum (a pass of its own)",
                   'Lion fused': 'inside our fused Lion step (same five arrays as SGD-momentum)'}

def transform_table(rows):
    "Each transform's step over the same step without it, per base and block (target <= 1.25 on the fused path)."
    tr = [r for r in rows if r['kind'] == 'transform']
    if not tr: return ''
    blocks = list(dict.fromkeys((r['dtype'], r['threads'], r['layout']) for r in tr))
    lines = [f"transforms: step / the same step without transforms (target <= {TARGETS['transform']} for T(fused=True))"]
    for bname, what in TRANSFORM_BASES.items():
        bt = [r for r in tr if r['base'] == bname]
        if not bt: continue
        base = {(r['dtype'], r['threads'], r['layout']): r['ms'] for r in rows if r['kind'] == 'base' and r['optimizer'] == bname}
        lines += [f"{what}:",
                  f"{'transform':24s} {'path':8s}" + ''.join(f" | {(f'{t}t ' if t != '' else '') + lay:>16s}" for d, t, lay in blocks),
                  f"{'(base ms)':24s} {'':8s}" + ''.join(f" | {_f(base.get(b), '{:.2f}'):>16s}" for b in blocks)]
        for key in dict.fromkeys((r['optimizer'], r['path']) for r in bt):
            cells = []
            for b in blocks:
                r = next((x for x in bt if (x['dtype'], x['threads'], x['layout'], x['optimizer'], x['path']) == (*b, *key)), None)
                cells.append(f" | {(_f(r['ratio_to_base']) + _mark(r)) if r else 'n/a':>16s}")
            lines.append(f"{key[0].replace(bname + ' + ', ''):24s} {key[1]:8s}" + ''.join(cells))
    return '\n'.join(lines)

def memory_table(rows):
    "Peak extra bytes per parameter during a step (beyond parameters, gradients and state), per path, largest over blocks; target <= one parameter-sized buffer."
    rs = [r for r in rows if r['extra_peak_bytes_per_param'] != '' and r['kind'] in ('ours', 'torch')]
    if not rs: return ''
    lines = [f"peak extra memory in a step, bytes per parameter (target <= one parameter-sized buffer = element size); state bytes per parameter",
             f"{'step':26s} {'layout':>10s} {'extra peak':>10s} {'state':>6s} {'documented':>10s}"]
    for key in dict.fromkeys((r['optimizer'], r['path'], r['layout']) for r in rs):
        g = [r for r in rs if (r['optimizer'], r['path'], r['layout']) == key]
        w = max(g, key=lambda r: r['extra_peak_bytes_per_param'])
        lines.append(f"{key[0] + ' ' + key[1]:26s} {key[2]:>10s} {w['extra_peak_bytes_per_param']:10.2f}{'' if w['extra_met'] else ' MISS'} "
                     f"{w['state_bytes_per_param']:6.1f} {w['documented_state_bytes_per_param']:10}")
    return '\n'.join(lines)

def compile_table(compiles, meta):
    "Cold first step (empty cache) per thread count and the cached start-up, per compiled step and layout."
    if not compiles: return 'compile times: no compiled step ran'
    lines = [f"compile: first fused step in seconds (cold: empty Inductor cache; cached: a new process on the same cache). "
             f"Inductor's one-time start-up: {meta.get('inductor_startup_cold_s')} s cold, {(meta.get('startup') or {}).get('inductor_startup_s', 'n/a')} s cached",
             f"{'optimizer':14s} {'layout':>10s} {'threads':>7s} {'cold':>7s} {'cached':>7s} {'graphs':>6s} {'recompiles':>10s}"]
    for c in compiles:
        lines.append(f"{c['optimizer']:14s} {c['layout']:>10s} {str(c['threads']):>7s} {c['cold_first_step_s']:7.2f} {_f(c['cached_first_step_s']):>7s} "
                     f"{c['graphs']:>6} {c['recompiles_in_rounds']:>10}")
    return '\n'.join(lines)

def gpu_table(rows):
    "CUDA: each fused step of ours over torch's fused AdamW (Adam-like) or fused SGD-momentum (SGD-like); target <= 1.2."
    rs = [r for r in rows if r['kind'] == 'ours' and r['ratio_to_ref'] != '']
    if not rs: return ''
    lines = [f"GPU: step / torch's fused reference (target <= {TARGETS['gpu']} for fused); host sync over the steps under set_sync_debug_mode('error')",
             f"{'optimizer':14s} {'path':8s} {'dtype':5s} {'layout':>10s} {'ms':>8s} {'ref':>14s} {'ratio':>7s} {'sync':>6s}"]
    for r in rs:
        lines.append(f"{r['optimizer']:14s} {r['path']:8s} {r['dtype']:5s} {r['layout']:>10s} {r['ms']:8.3f} {r['ref']:>14s} "
                     f"{r['ratio_to_ref']:7.2f}{'' if r['ref_met'] in ('', True) else ' MISS'} {r['host_sync'][:40]:>6s}")
    return '\n'.join(lines)

def report(rows, compiles, meta, detail=True):
    "Everything the run prints at the end."
    parts = [floors_table(meta), ratio_table(rows)]
    if detail: parts += [block_table(rows, *b) for b in dict.fromkeys((r['dtype'], r['threads'], r['layout']) for r in rows)]
    parts += [transform_table(rows), memory_table(rows), compile_table(compiles, meta), gpu_table(rows)]
    if meta.get('skipped'):
        parts.append('skipped:\n' + '\n'.join(f"  {s['block']}: {s['step']}: {s['why']}" for s in meta['skipped']))
    parts.append(f"load average: start {' '.join(f'{x:.2f}' for x in meta['loadavg_start'])}, end {' '.join(f'{x:.2f}' for x in meta['loadavg_end'])}; wall {meta['wall_s']} s")
    return '\n\n'.join(p for p in parts if p)

COLORS = {}
def plot(rows, path=None):
    "Time per element against bytes moved per element, one point per step (ours by path, torch, floors); one panel per block."
    import matplotlib, matplotlib.ticker, matplotlib.pyplot as plt
    rs = [r for r in rows if r['bytes_moved_per_param'] != '']
    blocks = list(dict.fromkeys((r['dtype'], r['threads'], r['layout']) for r in rs))
    if not blocks: return plt.figure()
    lays = list(dict.fromkeys(b[2] for b in blocks)); others = list(dict.fromkeys(b[:2] for b in blocks))
    fig, axs = plt.subplots(len(others), len(lays), figsize=(6.5*len(lays), 4.6*len(others)), squeeze=False)
    names = list(dict.fromkeys(r['optimizer'] for r in rs if r['kind'] == 'ours'))
    cmap = plt.get_cmap('tab20')
    color = {n: cmap(i % 20) for i, n in enumerate(names)}
    marker = {'default': 'o', 'fused': 's', 'per-tensor': 'x'}
    for (d, t, lay) in blocks:
        ax = axs[others.index((d, t))][lays.index(lay)]
        b = [r for r in rs if (r['dtype'], r['threads'], r['layout']) == (d, t, lay)]
        st = next((r for r in b if r['optimizer'] == 'floor' and r['path'] == 'stream'), None)
        if st:                                                 # the streaming floor's bandwidth: time = bytes / bandwidth
            bs = [r['bytes_moved_per_param'] for r in b]; xs = [min(bs) * 0.8, max(bs) * 1.25]
            ax.plot(xs, [x * st['ns_per_param']/st['bytes_moved_per_param'] for x in xs], ':', c='gray', lw=1,
                    label=f"streaming bandwidth ({st['GBps']} GB/s)")
        for r in b:
            if r['kind'] == 'ours':
                ax.scatter(r['bytes_moved_per_param'], r['ns_per_param'], marker=marker.get(r['path'], '.'), color=color[r['optimizer']], s=36,
                           label=r['optimizer'] if r['path'] == 'fused' or 'fused' not in {x['path'] for x in b} else None)
            else:
                ax.scatter(r['bytes_moved_per_param'], r['ns_per_param'], marker='^' if r['kind'] == 'torch' else 'd', color='k', s=22)
                ax.annotate(f"{r['optimizer']} {r['path']}" if r['kind'] == 'torch' else r['path'], (r['bytes_moved_per_param'], r['ns_per_param']),
                            fontsize=6, xytext=(3, -3), textcoords='offset points')
        ax.set_title(f"{d}, {f'{t} thread(s), ' if t != '' else ''}{lay}", fontsize=10)
        ax.set_xlabel('bytes moved per element (read + written, at the least)'); ax.set_ylabel('ns per element (median step)')
        ax.set_xscale('log'); ax.set_yscale('log'); ax.grid(alpha=.3, which='both')
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter()); ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xticks(sorted({x for x in bs}))
    h, l = axs[0][0].get_legend_handles_labels()
    from matplotlib.lines import Line2D
    h += [Line2D([], [], ls='', marker=m, color='gray') for m in marker.values()] + [Line2D([], [], ls='', marker='^', color='k')]
    l += [f'ours, {p}' for p in marker] + ['torch']
    axs[0][-1].legend(h, l, fontsize=7, ncol=2, loc='upper left', bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    if path: fig.savefig(path, dpi=90, bbox_inches='tight')
    return fig

def main(argv=None):
    global DEVICE
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--device', default='cpu', help="'cpu' or 'cuda' (steps timed between synchronizations)")
    ap.add_argument('--quick', action='store_true', help='a small run in seconds: 1M parameters (10M on CUDA), one thread, 3 rounds, no compiled steps (--fused adds them), no profiles')
    ap.add_argument('--params', type=lambda s: int(float(s)), default=None, help='parameters per layout (default 2.5e7; 1e8 on CUDA)')
    ap.add_argument('--layouts', default='4,2500', help='tensor counts, e.g. 4,2500')
    ap.add_argument('--threads', default=None, help='CPU thread counts, each a block of the same run (default 2,1)')
    ap.add_argument('--dtypes', default=None, help='fp32, bf16, fp16 (default fp32; fp32,bf16 on CUDA)')
    ap.add_argument('--paths', default='default,fused', help="of ours: default (foreach=None), fused (fused=True), per-tensor (foreach=False, the readable loop: +1 minute at 25M)")
    ap.add_argument('--transform-paths', default='fused,default', help="the transforms' paths in front of fused SGD-momentum ('' for none)")
    ap.add_argument('--fused', action=argparse.BooleanOptionalAction, default=None,
                    help='the compiled steps (fused=True): on by default, off with --quick (their first steps compile: minutes)')
    ap.add_argument('--methods', default=None, help='only these registry optimizers, e.g. GAdam,Lion (default: all)')
    ap.add_argument('--warmup', type=int, default=None)
    ap.add_argument('--reps', type=int, default=None)
    ap.add_argument('--out', default='results/perf')
    ap.add_argument('--tag', default=None, help='file names bench_<tag>*.* (default cpu, gpu on CUDA)')
    ap.add_argument('--no-startup', action='store_true', help='skip the cached start-up process')
    ap.add_argument('--profile', default=None, choices=['missed', 'none'], help='torch.profiler tables of the steps that miss a target')
    ap.add_argument('--sync-steps', type=int, default=None, help="CUDA: steps of each of ours under set_sync_debug_mode('error') (default 20)")
    ap.add_argument('--time-budget', type=float, default=None, help='seconds: blocks that would start later are skipped (with the reason)')
    ap.add_argument('--cache-dir', default=None, help='Inductor cache dir (default: a fresh one, so the first steps are cold compiles)')
    ap.add_argument('--compile-timeout', type=float, default=600, help='seconds a first step (a compile) may take before that step is skipped')
    ap.add_argument('--startup-child', default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.startup_child: return startup_child(json.loads(a.startup_child))
    DEVICE = a.device
    if DEVICE != 'cpu' and not torch.cuda.is_available(): sys.exit(f'--device {DEVICE}: no CUDA device here (torch {torch.__version__})')
    cuda = DEVICE != 'cpu'
    params = a.params or (10_000_000 if cuda else 1_000_000) if a.quick else a.params or (100_000_000 if cuda else 25_000_000)
    threads = [int(x) for x in (a.threads or ('1' if a.quick else '2,1')).split(',')]
    dtypes = (a.dtypes or ('fp32,bf16' if cuda else 'fp32')).split(',')
    fused = a.fused if a.fused is not None else not a.quick
    paths = [p for p in a.paths.split(',') if p and (fused or p != 'fused')]
    tpaths = [p for p in a.transform_paths.split(',') if p and (fused or p != 'fused')]
    if a.methods:
        unknown = set(a.methods.split(',')) - set(METHODS)
        if unknown: sys.exit(f'--methods: not in the registry: {sorted(unknown)} (registered: {list(METHODS)})')
        for name in list(METHODS):
            if name not in a.methods.split(','): del METHODS[name]
    rows, compiles, meta = run(params, [int(x) for x in a.layouts.split(',')], threads, dtypes, paths, tpaths,
                               a.warmup if a.warmup is not None else (3 if cuda else 1), a.reps or (3 if a.quick else 20 if cuda else 6),
                               a.out, a.tag or ('gpu' if cuda else 'cpu'), not (a.no_startup or a.quick),
                               a.profile or ('none' if a.quick else 'missed'), a.sync_steps if a.sync_steps is not None else (20 if cuda else 0),
                               a.time_budget, a.cache_dir, a.compile_timeout)
    print('\n' + report(rows, compiles, meta, detail=True), flush=True)
    tag = a.tag or ('gpu' if cuda else 'cpu')
    print(f"\nwritten to {a.out}: {', '.join(sorted(p.name for p in Path(a.out).glob('*') if p.stem.split('.')[0].endswith(tag) or f'_{tag}_' in p.name))}")

if __name__ == '__main__': main()
