"""Implementation tests of the gradient transforms and `with_transforms`, moved here from 05_transforms.

The notebook keeps the lecture: the derivations with their numerical checks and one per-element reference check per
transform (tests/references.py). Here, with the notebook's tolerances: the edge cases of `centralize`, `global_std`
and `agr` (zeros, one entry, vectors, fp32 at 1e±30, fp16); the parameter lists `help()` shows; `AGRAdamW` against
the reference with `until`, against torch's AdamW with AGR off, its step counters and its errors; `AGR(until=...)`;
a transformed optimizer equals "transform by hand, then step" for torch's AdamW and SGD and for GSGD; no NaN from
all-zero gradients; resume from a state dict (both layouts), pickling, step hooks that fire once per step.
"""
import copy, inspect, math, pickle
import numpy as np, pytest, torch
from fastcore.test import test_close as assert_close, test_eq as assert_eq, test_fail as assert_fails   # not collected
from gradual_opt.gsgd import GSGD
from gradual_opt.transforms import (GradTransform, Centralize, AutoscaleNorm, AGR, AGRAdamW, TransformedOptimizer,
                                    with_transforms, centralize, global_std, agr)
from references import ref_agradamw

F64 = torch.float64


# --- gradient centralization -------------------------------------------------------------------------------------

def test_centralize_leaves_vectors_and_zeros():
    "Tensors with fewer than two dims are not touched; an all-zero gradient stays zero."
    torch.manual_seed(0)
    b = torch.randn(5); assert_eq(centralize(b), b)
    assert_eq(centralize(torch.zeros(3, 4)), torch.zeros(3, 4))


# --- the global standard deviation -------------------------------------------------------------------------------

def _std_problem():
    "The notebook's three tensors on their own scales, and numpy's unbiased std of their concatenation."
    rng = np.random.default_rng(0)
    arrs = [rng.standard_normal(s) * sc for s, sc in (((3, 4), 0.1), ((5, 2, 3), 2.0), ((7, 1), 0.01))]
    return arrs, np.std(np.concatenate([a.ravel() for a in arrs]), ddof=1)

@pytest.mark.parametrize('scale', [1e-30, 1e30])
def test_global_std_scale_safe(scale):
    "fp32 entries whose naive squares would underflow (1e-30) or overflow (1e30): the std is still right to 1e-5."
    arrs, ref = _std_problem()
    got = global_std([torch.tensor(a * scale, dtype=torch.float32) for a in arrs]).item()
    assert_close(got / scale, ref, eps=1e-5)

def test_global_std_degenerate():
    "All zeros give 0; a single entry has no unbiased std and is defined as 0."
    assert_eq(global_std([torch.zeros(3, 3)]).item(), 0.)
    assert_eq(global_std([torch.ones(1, 1)]).item(), 0.)


# --- AGR's operator at the edges ---------------------------------------------------------------------------------

def test_agr_zero_and_one_entry():
    "No 0/0 on an all-zero tensor; a one-entry tensor has alpha = 1, so the formula erases it."
    assert_eq(agr(torch.zeros(2, 3)), torch.zeros(2, 3))
    assert_eq(agr(torch.tensor([[2.5]])), torch.zeros(1, 1))

@pytest.mark.parametrize('scale', [1e-30, 1e30])
def test_agr_extreme_scales(scale):
    "fp32 gradients at 1e±30 give the fp64 result at scale 1, scaled."
    torch.manual_seed(0); g = torch.randn(3, 5, dtype=F64)
    assert_close(agr((g * scale).float()) / scale, agr(g).float(), eps=1e-5)

def test_agr_fp16_sum_overflows():
    "fp16: sum|g| = 90000 exceeds the fp16 maximum, and the result is still finite and right."
    h = torch.full((300, 300), 1.0, dtype=torch.float16)
    assert torch.isfinite(agr(h)).all()
    assert_close(agr(h).float(), torch.full((300, 300), 1 - 1/90000), eps=1e-3)


# --- help() ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('cls', [GradTransform, Centralize, AutoscaleNorm, AGR])
def test_help_lists_parameters(cls):
    "Each transform's `__init__` docstring lists every parameter with its default."
    for name, prm in inspect.signature(cls).parameters.items():
        assert_eq(f'{name} (default {prm.default!r})' in cls.__init__.__doc__, True)

def test_help_of_agr_and_of_a_transformed_class():
    "AGR's docstring carries its comments; a class made by `with_transforms` has the signature of what it wraps."
    assert_eq('gradients with fewer dims are left as they are' in AGR.__init__.__doc__, True)
    assert_eq(inspect.signature(with_transforms(torch.optim.AdamW, AGR())), inspect.signature(torch.optim.AdamW))


# --- AGRAdamW ----------------------------------------------------------------------------------------------------

HP = dict(lr=0.05, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)

def _agradamw_problem():
    "The notebook's matrix and bias (fp64) and six steps of gradients."
    torch.manual_seed(3)
    W0, B0 = torch.randn(3, 4, dtype=F64), torch.randn(4, dtype=F64)
    return W0, B0, [(torch.randn(3, 4, dtype=F64), torch.randn(4, dtype=F64)) for _ in range(6)]

def run_opt(make, steps=6):
    "(W, B, optimizer) after `steps` steps of `make([W, B])` on the problem's gradients."
    W0, B0, Gs = _agradamw_problem()
    W, B = torch.nn.Parameter(W0.clone()), torch.nn.Parameter(B0.clone()); o = make([W, B])
    for gw, gb in Gs[:steps]: W.grad, B.grad = gw.clone(), gb.clone(); o.step()
    return W.detach(), B.detach(), o

def ref_run(**kw):
    "The per-element reference (tests/references.py) on the same weights and gradients: (W, B) after the last step."
    W0, B0, Gs = _agradamw_problem()
    W_, B_ = ref_agradamw([W0.flatten().tolist(), B0.tolist()], [[gw.flatten().tolist(), gb.tolist()] for gw, gb in Gs],
                          ndims=[2, 1], **HP, **kw)[-1]
    return torch.tensor(W_, dtype=F64).view(3, 4), torch.tensor(B_, dtype=F64)

def test_agradamw_counts_steps():
    "Each tensor's own step counter and the group's both reach the number of steps."
    _, _, o = run_opt(lambda ps: AGRAdamW(ps, **HP))
    assert_eq([int(o.state[p]['step']) for p in o.param_groups[0]['params']], [6, 6])
    assert_eq(int(o.param_groups[0]['step']), 6)

def test_agradamw_until_matches_reference():
    "AGR switched off after until*total_steps = 0.5*6 = 3 steps, as in the reference."
    W, B, _ = run_opt(lambda ps: AGRAdamW(ps, **HP, until=0.5, total_steps=6))
    Wr, Br = ref_run(until=0.5, total_steps=6)
    assert_close(W, Wr, eps=1e-12); assert_close(B, Br, eps=1e-12)

def test_agradamw_without_agr_is_adamw():
    "With AGR off everywhere (min_ndim above every tensor's ndim) AGRAdamW is torch's AdamW."
    W, B, _ = run_opt(lambda ps: AGRAdamW(ps, **HP, min_ndim=9))
    W2, B2, _ = run_opt(lambda ps: torch.optim.AdamW(ps, **HP))
    assert_close(W, W2, eps=1e-12); assert_close(B, B2, eps=1e-12)

def test_agradamw_errors():
    "`until` without `total_steps` fails at the step; an invalid `until` or beta2 at construction."
    assert_fails(lambda: run_opt(lambda ps: AGRAdamW(ps, until=0.5)), contains='total_steps')
    W = torch.nn.Parameter(torch.zeros(3, 4))
    assert_fails(lambda: AGRAdamW([W], until=1.5), contains='Invalid until value')
    assert_fails(lambda: AGRAdamW([W], betas=(0.9, 1.0)), contains='Invalid beta2 value')


# --- the AGR transform's `until` ---------------------------------------------------------------------------------

def test_agr_transform_until():
    "`total_steps=6, until=0.5` transforms the first three calls only; `until` without `total_steps` fails."
    t = AGR(until=0.5, total_steps=6); P = torch.nn.Parameter(torch.zeros(2, 2))
    changed = []
    for _ in range(6):
        P.grad = torch.tensor([[1., 2.], [3., 4.]]); t([P])
        changed.append(not torch.equal(P.grad, torch.tensor([[1., 2.], [3., 4.]])))
    assert_eq(changed, [True]*3 + [False]*3)
    assert_fails(lambda: AGR(until=0.5)([P]), contains='total_steps')


# --- with_transforms in front of any optimizer -------------------------------------------------------------------

TF_SETS = {'GC': lambda: [Centralize()], 'AGR': lambda: [AGR()], 'autoscale': lambda: [AutoscaleNorm()],
           'all three': lambda: [Centralize(), AutoscaleNorm(), AGR()]}
OPTS = {'AdamW': (torch.optim.AdamW, dict(lr=1e-2)), 'SGD': (torch.optim.SGD, dict(lr=1e-2, momentum=0.9)),
        'GSGD': (GSGD, dict(lr=1e-2, total_steps=10))}

def _mlp():
    torch.manual_seed(5); return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))

def by_hand(opt_cls, tfms, kw, steps=4):
    "Apply fresh copies of `tfms` to p.grad ourselves, then call the plain optimizer."
    m = _mlp(); o = opt_cls(m.parameters(), **kw)
    tf = [copy.deepcopy(t) for t in tfms]; x = torch.randn(8, 4)
    for i in range(steps):
        o.zero_grad(); m(x + i).pow(2).mean().backward()
        with torch.no_grad():
            for t in tf: t(list(m.parameters()))
        o.step()
    return [p.detach().clone() for p in m.parameters()]

def wrapped(opt_cls, tfms, kw, steps=4):
    "The same run with `with_transforms(opt_cls, *tfms)`: parameters and the optimizer."
    m = _mlp(); o = with_transforms(opt_cls, *tfms)(m.parameters(), **kw)
    x = torch.randn(8, 4)
    for i in range(steps):
        o.zero_grad(); m(x + i).pow(2).mean().backward(); o.step()
    return [p.detach().clone() for p in m.parameters()], o

@pytest.mark.parametrize('tfs', TF_SETS)
@pytest.mark.parametrize('opt', OPTS)
def test_transformed_equals_by_hand(opt, tfs):
    "A transformed optimizer equals the transforms applied by hand before the plain optimizer, and is one."
    opt_cls, kw = OPTS[opt]; tf = TF_SETS[tfs]()
    got, o = wrapped(opt_cls, tf, kw)
    for a_, b_ in zip(got, by_hand(opt_cls, tf, kw)): assert_close(a_, b_, eps=1e-7)
    assert isinstance(o, opt_cls) and isinstance(o, torch.optim.Optimizer)

def _zero_params():
    "A matrix, a one-element matrix, a one-element vector and a vector, all zero."
    return [torch.nn.Parameter(torch.zeros(s)) for s in ((3, 4), (1, 1), (1,), (5,))]

@pytest.mark.parametrize('tfs', TF_SETS)
def test_no_nan_from_zero_and_one_element_gradients(tfs):
    "All-zero gradients and one-element tensors give finite parameters in every transform (three steps of AdamW)."
    zero = _zero_params()
    for grads in ([torch.zeros(3, 4), torch.zeros(1, 1), torch.zeros(1), torch.zeros(5)],
                  [torch.zeros(3, 4), torch.full((1, 1), 0.7), torch.full((1,), -2.), torch.randn(5)]):
        o = with_transforms(torch.optim.AdamW, *TF_SETS[tfs]())(zero, lr=1e-2)
        for _ in range(3):
            for p, g in zip(zero, grads): p.grad = g.clone()
            o.step()
        assert all(torch.isfinite(p).all() for p in zero), tfs

def test_agradamw_no_nan_from_zero_gradients():
    "AGRAdamW: all-zero gradients (AGR's 0/0 case) give finite parameters."
    zero = _zero_params()
    o = AGRAdamW(zero, lr=1e-2)
    for p in zero: p.grad = torch.zeros_like(p)
    o.step(); assert all(torch.isfinite(p).all() for p in zero)

def test_with_transforms_refuses():
    "LBFGS (which evaluates its closure many times) and a plain function in place of a transform are refused."
    assert_fails(lambda: with_transforms(torch.optim.LBFGS, AGR()), contains='LBFGS')
    assert_fails(lambda: with_transforms(torch.optim.AdamW, lambda g: g), contains='Invalid transform')


# --- checkpoints, pickles, hooks ---------------------------------------------------------------------------------

Opt = with_transforms(torch.optim.AdamW, AutoscaleNorm(track=True), AGR(until=0.5, total_steps=8))

def train(o, m, steps, start=0):
    for i in range(start, start + steps):
        torch.manual_seed(50 + i); x = torch.randn(16, 4)
        o.zero_grad(); m(x).pow(2).mean().backward(); o.step()

@pytest.fixture(scope='module')
def runs():
    "An uninterrupted run of 8 steps (mA, oA), and one stopped after 3 steps (mB, oB)."
    torch.manual_seed(7); mA = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2))
    mB = copy.deepcopy(mA)
    oA = Opt(mA.parameters(), lr=1e-2); train(oA, mA, 8)
    oB = Opt(mB.parameters(), lr=1e-2); train(oB, mB, 3)
    return mA, oA, mB, oB

def resumed(mB, sd):
    "A copy of the stopped model, its optimizer loaded from `sd` and run for the last 5 steps."
    m = copy.deepcopy(mB); o = Opt(m.parameters(), lr=1e-2); o.load_state_dict(sd); train(o, m, 5, start=3)
    return m, o

def test_resume_from_state_dict(runs):
    "Resumed after 3 steps: the same parameters as the uninterrupted run, the same p_t, AGR's count at 8."
    mA, oA, mB, oB = runs
    mB2, oB2 = resumed(mB, copy.deepcopy(oB.state_dict()))
    for a_, b_ in zip(mA.parameters(), mB2.parameters()): assert_eq(a_.detach(), b_.detach())
    assert_eq(oB2.grad_transforms[0].p_t, oA.grad_transforms[0].p_t); assert_eq(oB2.grad_transforms[1].step, 8)

def test_resume_from_the_old_layout(runs):
    "The transforms' state is in param group 0; a checkpoint with it under a top-level key resumes the same."
    mA, _, mB, oB = runs
    sd = copy.deepcopy(oB.state_dict())         # torch's load_state_dict may alias the tensors it is given
    assert 'grad_transforms' not in sd and len(sd['param_groups'][0]['grad_transforms']) == 2
    old = {**sd, 'grad_transforms': sd['param_groups'][0]['grad_transforms'],
           'param_groups': [{k: v for k, v in g.items() if k != 'grad_transforms'} for g in sd['param_groups']]}
    mB3, oB3 = resumed(mB, old)
    for a_, b_ in zip(mA.parameters(), mB3.parameters()): assert_eq(a_.detach(), b_.detach())
    assert_eq(oB3.grad_transforms[1].step, 8)

def test_pickle(runs):
    "A pickled transformed optimizer comes back as the same class, with its transforms, parameters and state."
    _, _, mB, oB = runs
    mB2, oB2 = resumed(mB, copy.deepcopy(oB.state_dict()))
    o2 = pickle.loads(pickle.dumps(oB2))
    assert_eq(type(o2).__name__, type(oB2).__name__)
    assert isinstance(o2, TransformedOptimizer) and isinstance(o2, torch.optim.AdamW)
    assert_eq([t.state_dict() for t in o2.grad_transforms], [t.state_dict() for t in oB2.grad_transforms])
    assert torch.equal(o2.param_groups[0]['params'][0], mB2[0].weight)
    assert torch.equal(o2.state_dict()['state'][0]['exp_avg'], oB2.state_dict()['state'][0]['exp_avg'])

def test_step_hooks_fire_once_per_step():
    "The step hooks of a transformed optimizer fire once per step, not once for it and once for its parent."
    calls = []
    w = torch.nn.Parameter(torch.randn(3, 4)); oh = Opt([w], lr=1e-2)
    oh.register_step_pre_hook(lambda *a: calls.append('pre')); oh.register_step_post_hook(lambda *a: calls.append('post'))
    for _ in range(2): w.grad = torch.randn(3, 4); oh.step()
    assert_eq(calls, ['pre', 'post']*2)
