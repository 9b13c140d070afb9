"""Foreach batches and one tensor at a time give the same iterates, for every optimizer and transform of the registry.

Moved here from the method notebooks (02_gsgd, 03_lpsgd, 04_s3, 05_transforms), which name this file. Every test runs
inside `batch_bytes(4096)`, so that the large tensors of the problems are split across batches. Checked: fp64 and fp32
agree to rounding, bf16 runs are equally close to the fp64 run; gradients of 1e±30 in fp32; a switch of path in the
middle of a run (the state is the same); the configurations of each notebook that take different branches, with the
tolerances each notebook used. `tests/helpers.py` holds the runs and the comparisons.
"""
import copy
import numpy as np, pytest, torch
from fastcore.test import test_close as assert_close, test_eq as assert_eq, test_fail as assert_fails   # not collected
from gradual_opt import registry
from gradual_opt.plumbing import batch_bytes, foreach_batches
from gradual_opt.gsgd import GSGD, GAdam
from gradual_opt.lpsgd import LPSGD
from gradual_opt.s3 import S3
from gradual_opt.transforms import AGR, Centralize, AutoscaleNorm, with_transforms
from helpers import (F64, F32, BF16, LP, MIXED, paths_run, check_paths, check_close_paths, check_bf16_paths,
                     tf_grads, tf_apply)

OPTIMIZERS = {m.name: m for m in registry('optimizer')}
TRANSFORMS = {m.name: m for m in registry('transform')}


@pytest.fixture(autouse=True)
def small_batches():
    "Batches of 4 KiB per list: the large tensors of every problem are cut across several batches."
    with batch_bytes(4096): yield


def test_problems_are_split():
    "The batch size the tests run under really cuts the large tensors, and a parameter of MIXED spans several batches."
    ps = [torch.zeros(s) for s in MIXED.shapes]
    idx = [i for b in foreach_batches([ps]) for i in b[0]]
    assert idx.count(MIXED.shapes.index((5000,))) >= 5 and idx.count(MIXED.shapes.index((70, 90))) >= 6


# every registry optimizer with its test configuration: fp64, fp32, bf16; and a switch of path after three steps
@pytest.mark.parametrize('name', OPTIMIZERS)
def test_registry_paths(name):
    m = OPTIMIZERS[name]
    check_paths(m.cls, m.test_kwargs)


@pytest.mark.parametrize('name', OPTIMIZERS)
def test_registry_switch(name):
    m = OPTIMIZERS[name]
    switched = paths_run(m.cls, m.test_kwargs, F64, True, switch_at=3)
    for a, b in zip(switched, paths_run(m.cls, m.test_kwargs, F64, False)):
        assert_close(a, b, eps=1e-10)                              # switching foreach mid-run: the state is shared


@pytest.mark.parametrize('name', OPTIMIZERS)
def test_registry_default_foreach(name):
    "The default path is decided per step (`foreach=None`)."
    m = OPTIMIZERS[name]
    assert_eq(m.cls([torch.zeros(2, requires_grad=True)], **m.test_kwargs).param_groups[0]['foreach'], None)


# the configurations each method notebook checked, with its tolerances
LP_RUN = dict(problem=LP, steps=8, rtol={F64: 1e-12, F32: 1e-6}, finite=True)    # 8 steps of 6: the last three at p = 2
CASES = ([('GSGD', GSGD, dict(lr=0.1, total_steps=4) | kw, {}) for kw in [    # e = 0, fractional e, e = 1 (SGD)
             dict(), dict(rescale='tensor', momentum=0.9, nesterov=True, weight_decay=0.1),
             dict(rescale=None, momentum=0.9, dampening=0.5), dict(momentum=0.5, maximize=True), dict(total_steps=2),
             dict(rescale='group', momentum=0.9)]]
         + [('GAdam', GAdam, dict(lr=0.1, total_steps=4) | kw, {}) for kw in [  # q = 1/2 (sqrt), fractional q, q = 0
             dict(), dict(weight_decay=0.1, betas=(0.8, 0.99), maximize=True, eps=0.), dict(total_steps=2)]]
         + [('LPSGD', LPSGD, dict(lr=0.05, total_steps=6, p_max=6.) | kw, LP_RUN) for kw in [
             dict(), dict(momentum=0.9, weight_decay=0.1), dict(momentum=0.5, maximize=True, eps=0.),
             dict(momentum=0.9, weight_decay=0.01, steps_per_epoch=3), dict(p_max=2.)]]
         + [('S3', S3, dict(lr=0.1) | kw, {}) for kw in [                       # p in {1, 2, 2.5, 3, 7}, both nesterov
             dict(), dict(p=2, nesterov=False, weight_decay=0.1), dict(p=1, eps=0.0), dict(p=7, momentum=0.5),
             dict(p=2.5, nesterov=False, eps=0.0, weight_decay=0.01)]])
case_id = lambda c: f"{c[0]}-{'-'.join(f'{k}={v}' for k, v in c[2].items())}"


@pytest.mark.parametrize('case', CASES, ids=case_id)
def test_method_paths(case):
    _, cls, kw, run = case
    check_paths(cls, kw, **run)


@pytest.mark.parametrize('case', [c for c in CASES if c[0] == 'LPSGD'] + [
    ('GSGD', GSGD, dict(lr=0.1, total_steps=4, momentum=0.9), {}), ('GAdam', GAdam, dict(lr=0.1, total_steps=4), {}),
    ('S3', S3, dict(lr=0.1), {})], ids=case_id)
def test_method_switch(case):
    "Switching foreach mid-run gives the same iterates: LPSGD after four of eight steps (1e-12), others after three."
    _, cls, kw, run = case
    run = {k: v for k, v in run.items() if k in ('problem', 'steps')}
    at, eps = (4, 1e-12) if cls is LPSGD else (3, 1e-10)
    for a, b in zip(paths_run(cls, kw, F64, True, switch_at=at, **run), paths_run(cls, kw, F64, False, **run)):
        assert_close(a, b, eps=eps)


@pytest.mark.parametrize('scale', [1e-30, 1e30])
@pytest.mark.parametrize('cls, kw', [(GSGD, dict(lr=0.1, total_steps=4)),
                                     (GSGD, dict(lr=0.1, total_steps=4, rescale='tensor')), (S3, dict(lr=0.1))],
                         ids=['GSGD', 'GSGD-tensor', 'S3'])
def test_extreme_scales(cls, kw, scale):
    "fp32 gradients whose norms would over- or underflow unscaled."
    check_paths(cls, kw, dtypes=(F32,), scale=scale)


# the transforms of 05_transforms: every registry transform, and two variants of AutoscaleNorm
TF_KINDS = {**{n: (lambda m: lambda fe: m.cls(foreach=fe, **m.test_kwargs))(m) for n, m in TRANSFORMS.items()},
            'AutoscaleNorm-uncentered': lambda fe: AutoscaleNorm(center=False, foreach=fe),
            'AutoscaleNorm-p1-unscaled': lambda fe: AutoscaleNorm(scale=False, p=1, foreach=fe)}


@pytest.mark.parametrize('seed', range(3))
@pytest.mark.parametrize('kind', TF_KINDS)
def test_transform_paths(kind, seed):
    mk = TF_KINDS[kind]
    for dt in (F64, F32, BF16):
        gs = tf_grads(dt, seed)
        (single, ts), (batched, tb) = tf_apply(mk(False), gs), tf_apply(mk(True), gs)
        if isinstance(ts, AutoscaleNorm): assert_eq(ts.p_t, tb.p_t)
        if dt == BF16: check_bf16_paths(single, batched, tf_apply(mk(False), [g.double() for g in gs])[0], 1, True)
        else: check_close_paths(single, batched, dt, {F64: 1e-12, F32: 1e-5}, floor=1e-300)


def host_run(tfms, foreach, dtype=F64, steps=5):
    "`with_transforms(SGD, *tfms)` with momentum for `steps` steps on fixed gradients, the transforms' `foreach` set."
    tfms = [copy.deepcopy(t) for t in tfms]
    for t in tfms: t.foreach = foreach
    ps = [torch.nn.Parameter(torch.ones(g.shape, dtype=dtype)) for g in tf_grads(dtype, 0)]
    o = with_transforms(torch.optim.SGD, *tfms)(ps, lr=0.1, momentum=0.9)
    for k in range(steps):
        for p, g in zip(ps, tf_grads(dtype, 10 + k)): p.grad = g.clone()
        o.step()
    return [p.detach().double() for p in ps], o


@pytest.mark.parametrize('tfms', [[Centralize()], [AGR()], [AutoscaleNorm()],
                                  [Centralize(), AGR(), AutoscaleNorm(track=True)]],
                         ids=['Centralize', 'AGR', 'AutoscaleNorm', 'all-three'])
def test_transform_host_paths(tfms):
    "In front of torch's SGD: the same iterates (and AutoscaleNorm's recorded history) on both paths."
    for dt in (F64, F32):
        (single, o1), (batched, o2) = host_run(tfms, False, dt), host_run(tfms, True, dt)
        check_close_paths(single, batched, dt, {F64: 1e-10, F32: 1e-5})
        if len(tfms) == 3:
            assert_close(np.array(o2.grad_transforms[2].hist), np.array(o1.grad_transforms[2].hist), eps=1e-5)


@pytest.mark.parametrize('kind', TF_KINDS)
def test_transform_extremes(kind):
    "fp32 gradients from 1e-30 to 1e30: finite, and batched equal to one tensor at a time; zeros stay zero."
    mk = TF_KINDS[kind]
    for scale in (1e-30, 1e-20, 1e20, 1e30):
        gs = tf_grads(F32, 1, scale)
        (single, _), (batched, _) = tf_apply(mk(False), gs), tf_apply(mk(True), gs)
        check_close_paths(single, batched, F32, {F32: 1e-5}, finite=True, floor=1e-300)
    out, _ = tf_apply(mk(True), [torch.zeros(5, 4), torch.zeros(1, 1), torch.zeros(3)])
    assert all(torch.equal(o, torch.zeros_like(o)) for o in out)


def test_agr_edges():
    "AGR: a one-element tensor goes to exactly zero; fp16 keeps its fp32 accumulation (sum|g| = 90000 > fp16 max)."
    out, _ = tf_apply(AGR(foreach=True), [torch.tensor([[2.5]]), torch.full((300, 300), 1.0, dtype=torch.float16)])
    assert_eq(out[0], torch.zeros(1, 1, dtype=F64))
    assert_close(out[1], torch.full((300, 300), 1 - 1/90000, dtype=F64), eps=1e-3)


def test_transform_foreach_flag():
    "The flag is in the transform's state_dict and round-trips; a state_dict without it (older) keeps the current flag."
    t, t2 = AutoscaleNorm(foreach=True), AutoscaleNorm()
    t2.load_state_dict(t.state_dict()); assert_eq(t2.foreach, True)
    sd = t.state_dict(); sd.pop('foreach'); t3 = AutoscaleNorm(foreach=False); t3.load_state_dict(sd)
    assert_eq(t3.foreach, False)
    assert_eq(Centralize().foreach, None); assert_fails(lambda: AGR(foreach='yes'), contains='Invalid foreach value')
