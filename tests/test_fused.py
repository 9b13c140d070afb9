"fused=True (the compiled step) against the eager step, for every optimizer of the registry: same iterates, no recompile."
import copy, pytest, torch
import torch._dynamo
from gradual_opt.registry import registry
from gradual_opt.checks import compiler_problem

pytestmark = pytest.mark.skipif(compiler_problem('cpu') is not None, reason=f"no fused step here: {compiler_problem('cpu')}")
ENTRIES = registry('optimizer')
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.float64: dict(rtol=1e-10, atol=1e-12), torch.bfloat16: dict(rtol=2e-2, atol=2e-2)}

@pytest.fixture(autouse=True)
def _no_silent_eager():
    "A compiled step that hit dynamo's recompile limit would run eagerly and pass any comparison: make that an error."
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True): yield

def model(dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)).to(dtype)

def groups(m):   # two groups with their own hyper-parameters: a decay split, as trainers make
    return [dict(params=[m[0].weight, m[2].weight]), dict(params=[m[0].bias, m[2].bias], weight_decay=0., lr=0.02)]

def run(entry, fused, steps=6, dtype=torch.float32, maximize=False, lr=None, schedule=None):
    m = model(dtype); kw = {**entry.test_kwargs, 'maximize': maximize, 'fused': fused}
    if lr is not None: kw['lr'] = lr
    opt = entry.cls(groups(m), **kw)
    g = torch.Generator().manual_seed(1)
    for t in range(steps):
        x = torch.randn(8, 6, generator=g).to(dtype)
        opt.zero_grad(); m(x).square().mean().backward(); opt.step()
        if schedule: schedule(opt, t)
    return [p.detach().clone() for p in m.parameters()], opt

def close(a, b, dtype):
    for x, y in zip(a, b): torch.testing.assert_close(x, y, **TOL[dtype])

@pytest.mark.parametrize('entry', ENTRIES, ids=[e.name for e in ENTRIES])
def test_fused_equals_eager(entry):
    torch._dynamo.reset()
    (a, _), (b, opt) = run(entry, None), run(entry, True)
    close(a, b, torch.float32)
    compiled = opt.__dict__.get('_compiled', {})
    assert type(opt).update in compiled                 # the compiled path ran
    if entry.cls.global_stats:                           # and the step after the combine (GSGD's Eq. 4) too
        assert type(opt).apply in compiled
    assert not all(torch.equal(x, y) for x, y in zip(b, [p for p in model().parameters()]))   # and moved something

@pytest.mark.parametrize('entry', ENTRIES, ids=[e.name for e in ENTRIES])
def test_fused_maximize_tensor_lr_and_a_changing_lr_do_not_recompile(entry):
    torch._dynamo.reset()
    def decay(opt, t):
        for g in opt.param_groups: g['lr'] = g['lr']*0.9 if not torch.is_tensor(g['lr']) else g['lr'].mul_(0.9)
    lr = torch.tensor(entry.test_kwargs.get('lr', 1e-3))
    (a, _) = run(entry, None, maximize=True, lr=lr.clone(), schedule=decay)
    from torch._dynamo.utils import counters
    counters.clear()
    seen = []
    def decay_and_count(opt, t):
        decay(opt, t); seen.append(counters['stats']['unique_graphs'])
    (b, _) = run(entry, True, maximize=True, lr=lr.clone(), schedule=decay_and_count)
    close(a, b, torch.float32)
    # The first steps compile (per group, and GSGD-momentum's first step, which fills the buffer, has a graph of its
    # own); after step 3 the lr changes every step and nothing may compile again.
    assert seen[2] > 0 and seen[-1] == seen[2], f'graphs compiled after each of 6 steps: {seen}: a hyper-parameter change recompiles'
    assert seen[2] <= 8, seen

@pytest.mark.parametrize('entry', ENTRIES, ids=[e.name for e in ENTRIES])
def test_fused_bf16(entry):
    torch._dynamo.reset()
    (a, _), (b, _) = run(entry, None, dtype=torch.bfloat16, steps=3), run(entry, True, dtype=torch.bfloat16, steps=3)
    close(a, b, torch.bfloat16)

@pytest.mark.parametrize('name,extra', [('S3', {}), ('GSGD', {}), ('GSGD', dict(rescale='tensor')), ('GSGD', dict(rescale='group')),
                                        ('GAdam', {}), ('AGRAdamW', {}), ('Adan', {})])
def test_fused_resume_and_many_tensors_in_buckets(name, extra, monkeypatch):
    """A fused optimizer's state dict resumes an eager one; more tensors than a bucket (GSGD: Eq. 4 joins the buckets' pieces;
    GAdam, AGRAdamW: each tensor's own bias corrections, a 1-d `scalars` entry, are cut with the buckets)."""
    import gradual_opt.core
    torch._dynamo.reset()       # dynamo's recompile limit counts graphs per function across optimizers: start afresh
    monkeypatch.setattr(gradual_opt.core, 'FUSED_BUCKET', 4)
    e = next(x for x in ENTRIES if x.name == name)
    torch.manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(3)) for _ in range(4*2 + 3)]
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    kw = {**(dict(total_steps=10) if e.cls.scheduled else {}), **extra}
    fo, eo = e.cls(ps, lr=0.01, fused=True, **kw), e.cls(qs, lr=0.01, **kw)
    for k in range(4):
        g = torch.Generator().manual_seed(k)
        for p, q in zip(ps, qs): p.grad = torch.randn(3, generator=g); q.grad = p.grad.clone()
        if k == 0:                                     # the first bucket's first two tensors skip a step: their counts lag
            for p in (*ps[:2], *qs[:2]): p.grad = None
        fo.step(); eo.step()
        if k == 1: eo.load_state_dict(copy.deepcopy(fo.state_dict()))   # resume the eager one from the fused one's checkpoint
    for p, q in zip(ps, qs): torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)

def test_fused_refuses_what_it_cannot_do():
    e = next(x for x in ENTRIES if x.name == 'Lion')
    with pytest.raises(RuntimeError, match='fused=True and foreach=True cannot both be set'):
        e.cls([torch.nn.Parameter(torch.zeros(2))], fused=True, foreach=True)

TRANSFORMS = registry('transform')

@pytest.mark.parametrize('entry', TRANSFORMS, ids=[e.name for e in TRANSFORMS])
def test_fused_transform_equals_eager(entry, monkeypatch):
    "A transform with fused=True in front of torch's SGD-momentum gives the eager transform's iterates (buckets of 2 tensors)."
    import gradual_opt.transforms
    monkeypatch.setattr(gradual_opt.transforms, 'FUSED_BUCKET', 2)
    from gradual_opt.transforms import with_transforms
    torch._dynamo.reset()
    out = []
    for fused in (None, True):
        m = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))
        torch.manual_seed(0); [p.data.normal_() for p in m.parameters()]
        opt = with_transforms(torch.optim.SGD, entry.cls(**entry.test_kwargs, fused=fused))(m.parameters(), lr=0.05, momentum=0.9)
        g = torch.Generator().manual_seed(1)
        for _ in range(4):
            opt.zero_grad(); m(torch.randn(8, 6, generator=g)).square().mean().backward(); opt.step()
        out.append([p.detach().clone() for p in m.parameters()])
        assert (opt.grad_transforms[0] in gradual_opt.transforms._COMPILED) == bool(fused)   # the compiled path ran, and only then
    close(*out, torch.float32)

def test_fused_global_transform_over_many_buckets(monkeypatch):
    """AutoscaleNorm's one statistic spans every gradient: fused, each of its passes is compiled per bucket of whole tensors
    and the global statistics are joined in between, so any number of tensors works and gives the eager result."""
    import gradual_opt.transforms as T
    torch._dynamo.reset()
    monkeypatch.setattr(T, 'FUSED_BUCKET', 2)
    torch.manual_seed(0)
    shapes = [(3, 4), (0, 5), (2, 2), (5, 1), (1, 1), (4, 3, 2), (6,)]   # an empty one, a one-entry one, a 1-d one (not eligible)
    gs = [torch.randn(s)*10**k for k, s in enumerate(shapes)]              # scales 1 to 1e6: the units of max|g| matter
    out = []
    for fused in (None, True):
        ps = [torch.nn.Parameter(torch.zeros(s)) for s in shapes]
        for p, g in zip(ps, gs): p.grad = g.clone()
        t = T.AutoscaleNorm(fused=fused, track=True)
        for _ in range(2): t(ps)
        out.append(([p.grad for p in ps], t.hist, float(t.p_t)))
        assert (t in T._COMPILED) == bool(fused)
    (ga, ha, pa), (gb, hb, pb) = out
    close(ga, gb, torch.float32)
    assert pa == pb and torch.allclose(torch.tensor(ha, dtype=torch.float64), torch.tensor(hb, dtype=torch.float64), rtol=1e-6)

@pytest.mark.parametrize('names', [('Centralize',), ('AGR',), ('Centralize', 'AGR'), ('AutoscaleNorm', 'AGR'), ('AGR', 'AutoscaleNorm')])
def test_per_tensor_transforms_run_inside_our_fused_step(names, monkeypatch):
    """Per-tensor transforms (fused=True) at the end of the list run inside our optimizer's compiled step, bucket by bucket:
    the same iterates and the same transformed p.grad as the eager transforms and step; a global one (AutoscaleNorm), and
    any before it, keeps its own pass."""
    import gradual_opt.core, gradual_opt.transforms as T
    from gradual_opt.core import GradualOptimizer
    torch._dynamo.reset()
    monkeypatch.setattr(gradual_opt.core, 'FUSED_BUCKET', 2)
    out = []
    for fused in (None, True):
        m = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))
        torch.manual_seed(0); [p.data.normal_() for p in m.parameters()]
        ts = [getattr(T, n)(fused=fused) for n in names]
        opt = T.with_transforms(next(e.cls for e in ENTRIES if e.name == 'GAdam'), *ts)(m.parameters(), lr=0.01, total_steps=10, fused=fused)
        g = torch.Generator().manual_seed(1)
        for _ in range(4):
            opt.zero_grad(); m(torch.randn(8, 6, generator=g)).square().mean().backward(); opt.step()
        out.append([t.detach().clone() for p in m.parameters() for t in (p, p.grad)])
        inside = 0
        for n in reversed(names):
            if n == 'AutoscaleNorm': break
            inside += 1
        assert opt.in_step() == (inside if fused else 0)
        if fused:
            assert (GradualOptimizer._mapped_update in opt._compiled) == bool(inside)
            assert [t in T._COMPILED for t in opt.grad_transforms] == [i < len(names) - inside for i in range(len(names))]
        assert all(int(t.step) == 4 for t in opt.grad_transforms)        # each counted every step, inside the step or not
    close(*out, torch.float32)

def test_run_parallel_after_a_compiled_step():
    """torch.compile followed by a backward pass in a process forbids autograd in its forked children: run_parallel then
    runs the jobs in the process itself, says so, and gives the same results (run in a subprocess: the state is per process)."""
    import subprocess, sys, textwrap
    code = textwrap.dedent('''
        import torch
        from gradual_opt.studies.experiments import run_parallel, forked_autograd_works
        def job(k):
            x = torch.tensor(float(k), requires_grad=True); (x**3).backward(); return float(x.grad)
        assert forked_autograd_works()
        before = run_parallel(job, [1, 2, 3], workers=2)
        torch.compile(lambda t: t.sin()*2, fullgraph=True)(torch.ones(3))           # a compiled step (inference) ...
        x = torch.ones(2, requires_grad=True); (x*2).sum().backward()               # ... then training in the same process
        assert not forked_autograd_works()
        after = run_parallel(job, [1, 2, 3], workers=2)
        assert before == after == [3., 12., 27.], (before, after)
        print('ok')
    ''')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and 'ok' in out.stdout, out.stdout + out.stderr
    assert 'running the 3 jobs here, one after another' in out.stdout

@pytest.mark.parametrize('dtype,tol', [(torch.float32, 1e-6), (torch.bfloat16, 8e-3)])
def test_rms_compiled_by_hand(dtype, tol):
    """rms_ as a compiled step runs it (float64 inside, not hypot) against sqrt(b2 r^2 + (1-b2) g^2) by hand in Python
    floats, at values whose squares overflow (1e30) or underflow (1e-30) in fp32; the eager form alongside."""
    import math
    from gradual_opt.stages import rms_
    r0 = torch.tensor([0., 3., 1e30, 1e-30, 2e-38], dtype=dtype); g = torch.tensor([1e30, -4., 1e30, 1e-30, 0.], dtype=dtype)
    want = torch.tensor([math.sqrt(0.999*a*a + 0.001*b*b) for a, b in zip(r0.tolist(), g.tolist())], dtype=torch.float64)
    for f in (rms_, torch.compile(rms_, fullgraph=True)):
        r = [r0.clone()]; f(r, [g], 0.999)
        torch.testing.assert_close(r[0].double(), want, rtol=tol, atol=0)
