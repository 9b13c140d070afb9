"""The plain-Python references of tests/references.py, checked against independent sources.

* GSGD, GAdam, LPSGD, S3, AGRAdamW and the transforms: against the library as it is now (float64, given gradients,
  compared after every step, relative tolerance 1e-10), both the readable and the foreach paths where there are two.
* SGD and the AdamW part of AGRAdamW: against torch.optim.SGD / torch.optim.AdamW.
* Lion and Adan (not in the library): against steps computed by hand below, and closed forms of the first step.
* S3: Theorem 2's bounds (|update| <= lr with one beta; Eq. 4 with two), and a case where two betas exceed lr.
"""
import math, random, sys
from pathlib import Path
import pytest, torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from references import (ref_gsgd, ref_gadam, ref_lpsgd, ref_lpsgd_p, ref_s3, ref_lion, ref_adan, ref_agradamw,
                        ref_sgd, ref_agr, ref_psi, ref_centralize, ref_autoscale, ref_autoscale_steps)

from gradual_opt.gsgd import GSGD, GAdam
from gradual_opt.lpsgd import LPSGD
from gradual_opt.s3 import S3
from gradual_opt.transforms import AGRAdamW, AGR, Centralize, AutoscaleNorm, with_transforms

RTOL = 1e-10
SHAPES = [(3, 5), (7,), (2, 3, 2), (1, 1)]          # awkward: a matrix, a vector, a 3-d tensor, one entry
SCALES = [1.0, 0.01, 30.0, 2.0]                      # each tensor's gradients on their own scale


def _numel(shape): return math.prod(shape)

def make_problem(seed, steps=7, shapes=SHAPES, scales=SCALES, none_at=None, bias=0.0):
    "Initial weights and `steps` steps of gradients (flat float lists); one exact zero; `none_at`=(step, tensor) gives None."
    r = random.Random(seed)
    ws = [[r.gauss(0, 1) for _ in range(_numel(s))] for s in shapes]
    grads = [[[sc*(r.gauss(0, 1) + bias) for _ in range(_numel(s))] for s, sc in zip(shapes, scales)] for _ in range(steps)]
    grads[min(1, steps - 1)][0][2] = 0.0
    if none_at is not None: grads[none_at[0]][none_at[1]] = None
    return ws, grads

def run_lib(make_opt, ws, grads, shapes=SHAPES):
    "Run a library optimizer on float64 params holding `ws`, setting p.grad to the given gradients; params after each step."
    ps = [torch.nn.Parameter(torch.tensor(w, dtype=torch.float64).reshape(s)) for w, s in zip(ws, shapes)]
    opt, out = make_opt(ps), []
    for step in grads:
        for p, g, s in zip(ps, step, shapes):
            p.grad = None if g is None else torch.tensor(g, dtype=torch.float64).reshape(s)
        opt.step()
        out.append([p.detach().reshape(-1).tolist() for p in ps])
    return out

def assert_close(got, ref, rtol=RTOL, what=''):
    "Per element |got - ref| <= rtol*max(|ref|, 1e-3*max|ref| over the tensor) (relative, with a floor for near-zeros)."
    assert len(got) == len(ref)
    for t, (G, R) in enumerate(zip(got, ref)):
        assert len(G) == len(R)
        for j, (g, r) in enumerate(zip(G, R)):
            assert len(g) == len(r), (what, t, j)
            floor = 1e-3*max((abs(x) for x in r), default=0.0)
            for i, (a, b) in enumerate(zip(g, r)):
                assert abs(a - b) <= rtol*max(abs(b), floor, 1e-300), f"{what} step {t+1} tensor {j} entry {i}: {a!r} vs {b!r}"


# ---------------------------------------------------------------------------------------------------------------
# against the library

GSGD_CFGS = [dict(), dict(rescale='tensor'), dict(rescale=None), dict(momentum=0.9), dict(momentum=0.5, dampening=0.3),
             dict(momentum=0.9, nesterov=True, weight_decay=0.1), dict(momentum=0.8, rescale='tensor', weight_decay=0.05, maximize=True),
             dict(momentum=0.7, nesterov=True, rescale=None, maximize=True), dict(weight_decay=0.2, maximize=True)]

@pytest.mark.parametrize('foreach', [False, True])
@pytest.mark.parametrize('cfg', GSGD_CFGS, ids=str)
def test_gsgd_matches_library(cfg, foreach):
    for seed, N, none_at in ((0, 4, None), (1, 11, (3, 2))):      # N=4 < 7 steps: crosses the end of the schedule
        ws, grads = make_problem(seed, none_at=none_at)
        ref = ref_gsgd(ws, grads, lr=0.05, total_steps=N, **cfg)
        got = run_lib(lambda ps: GSGD(ps, lr=0.05, total_steps=N, foreach=foreach, **cfg), ws, grads)
        assert_close(got, ref, what=f'GSGD {cfg}')

@pytest.mark.parametrize('foreach', [False, True])
@pytest.mark.parametrize('cfg', [dict(), dict(betas=(0.5, 0.9), weight_decay=0.1), dict(eps=1e-3, maximize=True),
                                 dict(betas=(0.0, 0.5), eps=0.0)], ids=str)
def test_gadam_matches_library(cfg, foreach):
    for seed, N, none_at in ((2, 4, None), (3, 9, (2, 1))):       # N=4: q reaches 0 at t=5; None: per-tensor counts
        ws, grads = make_problem(seed, none_at=none_at)
        ref = ref_gadam(ws, grads, lr=0.05, total_steps=N, **cfg)
        got = run_lib(lambda ps: GAdam(ps, lr=0.05, total_steps=N, foreach=foreach, **cfg), ws, grads)
        assert_close(got, ref, what=f'GAdam {cfg}')

@pytest.mark.parametrize('foreach', [False, True])
@pytest.mark.parametrize('cfg', [dict(), dict(momentum=0.9, weight_decay=0.1, steps_per_epoch=3),
                                 dict(momentum=0.5, eps=1e-3, steps_per_epoch=2, maximize=True), dict(p_max=4.0, momentum=0.9),
                                 dict(steps_per_epoch=10), dict(p_max=2.0, weight_decay=0.3), dict(eps=0.0, momentum=0.3)], ids=str)
def test_lpsgd_matches_library(cfg, foreach):
    ws, grads = make_problem(4, steps=8, none_at=(5, 3))
    ref = ref_lpsgd(ws, grads, lr=0.01, total_steps=6, **cfg)
    got = run_lib(lambda ps: LPSGD(ps, lr=0.01, total_steps=6, foreach=foreach, **cfg), ws, grads)
    assert_close(got, ref, what=f'LPSGD {cfg}')

def test_lpsgd_p_schedule():
    assert ref_lpsgd_p(1, 10, 6.0) == 6.0 and ref_lpsgd_p(10, 10, 6.0) == 2.0 and ref_lpsgd_p(11, 10, 6.0) == 2.0
    assert math.isclose(ref_lpsgd_p(4, 7, 6.0), 4.0)                   # half way: cos(pi/2) = 0
    assert [ref_lpsgd_p(t, 6, 6.0, 3) for t in (1, 2, 3)] == [6.0]*3 and ref_lpsgd_p(4, 6, 6.0, 3) == 2.0   # S = 2 epochs

@pytest.mark.parametrize('foreach', [False, True])
@pytest.mark.parametrize('nesterov', [True, False])
@pytest.mark.parametrize('p', [1, 2, 3])
def test_s3_matches_library(p, nesterov, foreach):
    ws, grads = make_problem(5, steps=8, none_at=(4, 0))
    for kw in (dict(weight_decay=0.05), dict(maximize=True)):
        ref = ref_s3(ws, grads, lr=0.1, beta1=0.9, p=p, nesterov=nesterov, eps=0.0, **kw)
        got = run_lib(lambda ps: S3(ps, lr=0.1, momentum=0.9, p=p, nesterov=nesterov, eps=0.0, foreach=foreach, **kw), ws, grads)
        assert_close(got, ref, what=f'S3 p={p} nesterov={nesterov} {kw}')

@pytest.mark.parametrize('foreach', [False, True])
def test_s3_eps_at_unit_scale(foreach):
    "The library's eps is relative to the running max|g| of each tensor: with that max exactly 1 from the first step, absolute."
    ws, grads = make_problem(6, steps=6, scales=[0.3]*4)
    for step in grads:
        for g in step: g[:] = [max(-1.0, min(1.0, x)) for x in g]
    for g in grads[0]: g[0] = 1.0                                 # c = 1 from step 1 on
    for p, nesterov in ((2, True), (3, False), (1, True)):
        ref = ref_s3(ws, grads, lr=0.1, beta1=0.8, p=p, nesterov=nesterov, eps=1e-2)
        got = run_lib(lambda ps: S3(ps, lr=0.1, momentum=0.8, p=p, nesterov=nesterov, eps=1e-2, foreach=foreach), ws, grads)
        assert_close(got, ref, what=f'S3 eps p={p}')

@pytest.mark.parametrize('cfg', [dict(lr=0.05, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1),
                                 dict(lr=0.05, until=0.5, total_steps=6), dict(lr=0.02, min_ndim=1, maximize=True),
                                 dict(lr=0.02, min_ndim=3, weight_decay=0.0)], ids=str)
def test_agradamw_matches_library(cfg):
    ws, grads = make_problem(7, steps=7, none_at=(2, 0))
    ref = ref_agradamw(ws, grads, ndims=[len(s) for s in SHAPES], **cfg)
    got = run_lib(lambda ps: AGRAdamW(ps, **cfg), ws, grads)
    assert_close(got, ref, what=f'AGRAdamW {cfg}')

def test_agradamw_without_agr_is_torch_adamw():
    "An independent source for the AdamW part: AGR switched off everywhere (min_ndim above every ndim) is torch's AdamW."
    ws, grads = make_problem(8, steps=6)
    ref = ref_agradamw(ws, grads, lr=0.05, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1, min_ndim=9, ndims=[len(s) for s in SHAPES])
    got = run_lib(lambda ps: torch.optim.AdamW(ps, lr=0.05, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1), ws, grads)
    assert_close(got, ref, what='AdamW')


TF_SHAPES = [(3, 5), (7,), (2, 3, 2), (1, 1), (0, 5), (4, 1)]

def tf_grads(seed, scale=1.0, bias=0.3):
    r = random.Random(seed)
    gs = [[scale*(r.gauss(0, 1) + bias*(j + 1))*10.0**(j % 3 - 1) for _ in range(_numel(s))] for j, s in enumerate(TF_SHAPES)]
    return gs

def lib_transform(tfm, gs, shapes=TF_SHAPES):
    "Apply the library transform (through its public call on a list of parameters) to the given gradients."
    ps = [torch.nn.Parameter(torch.zeros(s, dtype=torch.float64)) for s in shapes]
    for p, g, s in zip(ps, gs, shapes): p.grad = torch.tensor(g, dtype=torch.float64).reshape(s)
    tfm(ps)
    return [p.grad.reshape(-1).tolist() for p in ps]

@pytest.mark.parametrize('foreach', [False, True])
def test_transforms_match_library(foreach):
    for seed in range(3):
        gs = tf_grads(seed)
        assert_close([lib_transform(AGR(foreach=foreach), gs)], [ref_agr(gs, TF_SHAPES)], what='AGR')
        assert_close([lib_transform(AGR(min_ndim=0, foreach=foreach), gs)], [ref_agr(gs)], what='AGR all')
        assert_close([lib_transform(Centralize(foreach=foreach), gs)], [ref_centralize(gs, TF_SHAPES)], what='Centralize')
        for kw in (dict(p=1), dict(p=2), dict(p=2, center=False), dict(p=1, scale=False), dict(p=2, max_scale=0.5)):
            assert_close([lib_transform(AutoscaleNorm(foreach=foreach, **kw), gs)], [ref_autoscale(gs, TF_SHAPES, **kw)],
                         what=f'AutoscaleNorm {kw}')

def test_transform_edge_cases():
    assert ref_psi([2.5]) == [0.0] and ref_psi([0.0, 0.0, 0.0]) == [0.0]*3
    assert ref_centralize([[1.0, 2.0], [1.0, 2.0]], [(2,), (1, 2)]) == [[1.0, 2.0], [-0.5, 0.5]]
    zs = [[0.0]*_numel(s) for s in TF_SHAPES]
    for f in (lambda g: ref_agr(g, TF_SHAPES), lambda g: ref_centralize(g, TF_SHAPES), lambda g: ref_autoscale(g, TF_SHAPES, 2)):
        assert f(zs) == zs
    for tfm in (AGR(), Centralize(), AutoscaleNorm(p=2)):
        assert lib_transform(tfm, zs) == zs

@pytest.mark.parametrize('foreach', [False, True])
def test_autoscale_one_shot_p_matches_library(foreach):
    for scale, expect in ((1e-4, 1), (0.3, 2)):             # s_1 small -> a_1 < 0.5 -> p_t = 1 afterwards
        steps = [tf_grads(10 + k, scale) for k in range(3)]
        ref, p_t = ref_autoscale_steps(steps, TF_SHAPES)
        ps = [torch.nn.Parameter(torch.zeros(s, dtype=torch.float64)) for s in TF_SHAPES]
        t, got = AutoscaleNorm(foreach=foreach), []
        for gs in steps:
            for p, g, s in zip(ps, gs, TF_SHAPES): p.grad = torch.tensor(g, dtype=torch.float64).reshape(s)
            t(ps); got.append([p.grad.reshape(-1).tolist() for p in ps])
        assert p_t == expect == t.p_t
        for G, R in zip(got, ref): assert_close([G], [R], what=f'AutoscaleNorm p=None scale={scale}')

def test_with_transforms_composition():
    "with_transforms(opt, *tfms) == the reference optimizer on the reference-transformed gradients."
    shapes = [(3, 5), (7,), (2, 3, 2)]
    ws, grads = make_problem(11, steps=6, shapes=shapes, scales=[1.0, 0.5, 3.0])
    tg = []
    for t, step in enumerate(grads, 1):
        g = ref_centralize(step, shapes)
        if t <= 3: g = ref_agr(g, shapes)                                 # AGR(until=0.5, total_steps=6)
        tg.append(ref_autoscale(g, shapes, p=2))
    make = with_transforms(torch.optim.SGD, Centralize(), AGR(until=0.5, total_steps=6), AutoscaleNorm(p=2))
    got = run_lib(lambda ps: make(ps, lr=0.1, momentum=0.9), ws, grads, shapes)
    assert_close(got, ref_sgd(ws, tg, lr=0.1, momentum=0.9), what='SGD+transforms')
    got = run_lib(lambda ps: with_transforms(GSGD, AGR())(ps, lr=0.05, total_steps=4, momentum=0.9), ws, grads, shapes)
    assert_close(got, ref_gsgd(ws, [ref_agr(s, shapes) for s in grads], lr=0.05, total_steps=4, momentum=0.9), what='GSGD+AGR')


# ---------------------------------------------------------------------------------------------------------------
# SGD: against torch.optim.SGD; GSGD past its schedule is SGD with decoupled decay

@pytest.mark.parametrize('cfg', [dict(), dict(momentum=0.9), dict(momentum=0.5, dampening=0.3, weight_decay=0.1),
                                 dict(momentum=0.9, nesterov=True, weight_decay=0.05, maximize=True)], ids=str)
def test_sgd_matches_torch(cfg):
    ws, grads = make_problem(12, none_at=(3, 1))
    assert_close(run_lib(lambda ps: torch.optim.SGD(ps, lr=0.05, **cfg), ws, grads), ref_sgd(ws, grads, lr=0.05, **cfg), what='SGD')

def test_gsgd_after_its_schedule_is_sgd():
    "N = 1: e = 0 at t = 1, then 1. If |g_1| is one constant, step 1's rescaled sign step is g_1 itself, so GSGD == SGD."
    ws, grads = make_problem(13)
    grads[0] = [[0.7*(1 if x >= 0 else -1) for x in g] for g in grads[0]]
    for cfg in (dict(), dict(momentum=0.9, weight_decay=0.1), dict(momentum=0.8, nesterov=True, maximize=True)):
        assert_close(ref_gsgd(ws, grads, lr=0.05, total_steps=1, **cfg), ref_sgd(ws, grads, lr=0.05, decoupled=True, **cfg),
                     what=f'GSGD post-schedule {cfg}')


# ---------------------------------------------------------------------------------------------------------------
# Lion: by hand, and the closed form of one step

def test_lion_by_hand():
    # lr=0.1, betas=(0.9, 0.99), wd=0.5: decay factor 1 - 0.1*0.5 = 0.95
    # step 1: c = 0.9*0 + 0.1*g1 = [0.03, -0.02, 0]  -> sign [1, -1, 0]
    #         w1 = 0.95*[1, -2, 0.5] - 0.1*[1, -1, 0] = [0.85, -1.8, 0.475];  m1 = 0.01*g1 = [0.003, -0.002, 0]
    # step 2: c = 0.9*m1 + 0.1*g2 = [0.0027-0.1, -0.0018+0.05, 0.02] = [-0.0973, 0.0482, 0.02] -> sign [-1, 1, 1]
    #         w2 = 0.95*w1 - 0.1*[-1, 1, 1] = [0.8075+0.1, -1.71-0.1, 0.45125-0.1] = [0.9075, -1.81, 0.35125]
    w0, g1, g2 = [1.0, -2.0, 0.5], [0.3, -0.2, 0.0], [-1.0, 0.5, 0.2]
    out = ref_lion([w0], [[g1], [g2]], lr=0.1, betas=(0.9, 0.99), weight_decay=0.5)
    assert_close(out, [[[0.85, -1.8, 0.475]], [[0.9075, -1.81, 0.35125]]], rtol=1e-14)
    # betas=(0.5, 0.0): m = g. Step 2's sign follows the interpolation c = 0.5*g1 + 0.5*g2 = 0.5*1 - 0.5*0.4 = 0.3 > 0,
    # although g2 = -0.4 < 0:  w1 = 0 - 0.1*sign(0.5) = -0.1;  w2 = -0.1 - 0.1*sign(0.3) = -0.2.  maximize flips both.
    assert_close(ref_lion([[0.0]], [[[1.0]], [[-0.4]]], lr=0.1, betas=(0.5, 0.0)), [[[-0.1]], [[-0.2]]], rtol=1e-14)
    assert_close(ref_lion([[0.0]], [[[1.0]], [[-0.4]]], lr=0.1, betas=(0.5, 0.0), maximize=True), [[[0.1]], [[0.2]]], rtol=1e-14)

def test_lion_first_step_identity():
    ws, grads = make_problem(14, steps=1)
    out = ref_lion(ws, grads, lr=0.01, betas=(0.9, 0.99))
    sgn = lambda x: (x > 0) - (x < 0)
    assert out == [[[w - 0.01*sgn((1 - 0.9)*g) for w, g in zip(W, G)] for W, G in zip(ws, grads[0])]]


# ---------------------------------------------------------------------------------------------------------------
# Adan: by hand, and the closed form of the first step

def test_adan_by_hand():
    # lr=0.1, betas=(0.5, 0.5, 0.5), eps=0, w0=[1, 1], g1=[2, -1], g2=[1, 1].
    # t=1: diff=0, m=[1, -0.5], d=0, n=0.5*g1^2=[2, 0.5]; bc1=bc2=bc3=0.5; denom=sqrt(n/0.5)=[2, 1]
    #      w1 = w0 - (0.1/0.5)*m/denom = [1 - 0.2*0.5, 1 + 0.2*0.5] = [0.9, 1.1]
    # t=2: diff=[-1, 2], m=0.5*m+0.5*g2=[1, 0.25], d=0.5*diff=[-0.5, 1], g+0.5*diff=[0.5, 2],
    #      n=0.5*[2, 0.5]+0.5*[0.25, 4]=[1.125, 2.25]; bc=0.75; denom=sqrt(n/0.75)=[sqrt(1.5), sqrt(3)]
    #      step sizes lr/bc1 = 2/15, lr*b2/bc2 = 1/15
    #      w2_0 = 0.9 - (2/15*1 - 1/15*0.5)/sqrt(1.5) = 0.9 - sqrt(1.5)/15      = 0.8183503419072274
    #      w2_1 = 1.1 - (2/15*0.25 + 1/15*1)/sqrt(3) = 1.1 - 0.1/sqrt(3)        = 1.0422649730810376
    kw = dict(lr=0.1, betas=(0.5, 0.5, 0.5), eps=0.0)
    w0, gs = [[1.0, 1.0]], [[[2.0, -1.0]], [[1.0, 1.0]]]
    assert_close(ref_adan(w0, gs, **kw), [[[0.9, 1.1]], [[0.8183503419072274, 1.0422649730810376]]], rtol=1e-14)
    # prox decay (no_prox=False), wd=0.5: divide by 1 + 0.05 after each update (the increments do not depend on w):
    #      w1 = [0.9, 1.1]/1.05 = [0.8571428571428571, 1.0476190476190477]
    #      w2 = (w1 - [sqrt(1.5)/15, 0.1/sqrt(3)])/1.05 = [0.7385649514762709, 0.9427466863810333]
    assert_close(ref_adan(w0, gs, weight_decay=0.5, **kw),
                 [[[0.8571428571428571, 1.0476190476190477]], [[0.7385649514762709, 0.9427466863810333]]], rtol=1e-14)
    # no_prox=True, wd=0.5: multiply by 1 - 0.05 = 0.95 before each update:
    #      w1 = 0.95*[1, 1] - [0.1, -0.1] = [0.85, 1.05]
    #      w2 = 0.95*w1 - [sqrt(1.5)/15, 0.1/sqrt(3)] = [0.7258503419072274, 0.9397649730810373]
    assert_close(ref_adan(w0, gs, weight_decay=0.5, no_prox=True, **kw),
                 [[[0.85, 1.05]], [[0.7258503419072274, 0.9397649730810373]]], rtol=1e-14)

def test_adan_first_step_is_normalized_gradient():
    "t = 1: diff = 0, m_hat = g, n_hat = g^2, so the step is lr*g/(|g| + eps)."
    ws, grads = make_problem(15, steps=1)
    for eps in (1e-8, 0.3):
        out = ref_adan(ws, grads, lr=0.01, eps=eps)
        exp = [[[w - 0.01*g/(abs(g) + eps) for w, g in zip(W, G)] for W, G in zip(ws, grads[0])]]
        assert_close(out, exp, rtol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# S3: Theorem 2

def _max_update_ratio(ws, outs, lr):
    prev, worst = ws, 0.0
    for cur in outs:
        worst = max(worst, max(abs(a - b) for A, B in zip(cur, prev) for a, b in zip(A, B))/lr); prev = cur
    return worst

def test_s3_tied_update_bounded_by_lr():
    "Theorem 2(2): with beta1 = beta2 every coordinate moves by at most lr (Hoelder), whatever the gradients."
    r = random.Random(16)
    shapes = [(4, 3), (5,)]
    ws = [[r.gauss(0, 1) for _ in range(_numel(s))] for s in shapes]
    grads = [[[r.gauss(0, 1)*math.exp(3*r.gauss(0, 1)) for _ in range(_numel(s))] for s in shapes] for _ in range(30)]
    for p in (1, 2, 3, 2.5):
        for nesterov in (True, False):
            for beta in (0.5, 0.9, 0.99):
                out = ref_s3(ws, grads, lr=0.1, beta1=beta, p=p, nesterov=nesterov)
                assert _max_update_ratio(ws, out, 0.1) <= 1 + 1e-12, (p, nesterov, beta)

def test_s3_untied_can_exceed_lr():
    "beta1=0.9 < beta2=0.99, p=2, Nesterov, step 1: n = (1-b1^2)g, b = sqrt(1-b2^2)|g|, |n|/b = 0.19/sqrt(0.0199) > 1."
    out = ref_s3([[0.0]], [[[0.5]]], lr=0.1, beta1=0.9, beta2=0.99, p=2)
    assert math.isclose(-out[0][0][0]/0.1, 0.19/math.sqrt(0.0199), rel_tol=1e-12) and -out[0][0][0] > 0.1

def test_s3_untied_within_eq4_bound():
    "Theorem 2(1), Eq. 4, for m_t/s_t^(1/p) (no Nesterov): |m/s^(1/p)| <= (1-b1)/((1-b2)^(1/p) (1 - b1^q/b2^(q/p))^(1/q))."
    r = random.Random(17)
    grads = [[[r.gauss(0, 1)*math.exp(2*r.gauss(0, 1)) for _ in range(6)]] for _ in range(40)]
    for b1, b2, p in ((0.9, 0.99, 2), (0.8, 0.9, 3), (0.5, 0.9, 1.5)):
        q = p/(p - 1)
        bound = (1 - b1)/((1 - b2)**(1/p)*(1 - b1**q/b2**(q/p))**(1/q))
        out = ref_s3([[0.0]*6], grads, lr=1.0, beta1=b1, beta2=b2, p=p, nesterov=False)
        assert _max_update_ratio([[0.0]*6], out, 1.0) <= bound*(1 + 1e-12), (b1, b2, p)
