"""LPSGD's implementation tests, moved from `nbs/03_lpsgd.ipynb` (the notebook keeps the float64 check against
`ref_lpsgd`, on CPU and, flagged `cuda`, on a GPU): the two bit-for-bit anchors (SGD at `p_max=2`, foreach against one
tensor at a time), exact resume through `state_dict()`, bad input, and awkward input that must not give NaN.
`tests/test_paths.py` compares the foreach and one-tensor paths in detail.
"""
import io, math
import pytest, torch
from fastcore.test import test_eq as eq   # an alias: pytest would collect test_eq

from gradual_opt.lpsgd import LPSGD
from gradual_opt.stages import lp_scale


# ---- the two bit-for-bit anchors and exact resume
SHAPES = [(4, 3), (3,), (1,)]

def random_grads(shapes, n, seed=0, dtype=torch.float32):
    "`n` steps of gradients of `shapes`, each tensor on its own scale 1e-6 ... 10."
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, generator=gen, dtype=dtype)*10**torch.randint(-6, 2, (), generator=gen).item() for s in shapes]
            for _ in range(n)]

def steps(opt, params, grads):
    for gs in grads:
        for p, gi in zip(params, gs): p.grad = gi.clone()
        opt.step()

@pytest.fixture
def init():
    torch.manual_seed(0)
    return [torch.randn(s) for s in SHAPES]

def leaves(init): return [x.clone().requires_grad_() for x in init]


def test_p_max_2_is_sgd(init):
    "With `p_max=2` and no momentum every step is plain SGD: torch.optim.SGD's parameters, bit for bit."
    grads = random_grads(SHAPES, 8)
    p1, p2 = leaves(init), leaves(init)
    steps(LPSGD(p1, lr=0.1, total_steps=8, p_max=2), p1, grads)
    steps(torch.optim.SGD(p2, lr=0.1), p2, grads)
    for x, y in zip(p1, p2): assert torch.equal(x, y)


def test_foreach_equals_one_tensor_at_a_time(init):
    "fp32, momentum, decay, a per-epoch schedule, small tensors (one batch): the two paths agree bit for bit."
    grads = random_grads(SHAPES, 8)
    kw = dict(lr=0.05, total_steps=8, p_max=7.5, momentum=0.9, weight_decay=0.1, steps_per_epoch=3)
    p1, p2 = leaves(init), leaves(init)
    steps(LPSGD(p1, foreach=False, **kw), p1, grads); steps(LPSGD(p2, foreach=True, **kw), p2, grads)
    for x, y in zip(p1, p2): assert torch.equal(x, y)


def test_exact_resume(init):
    "9 steps in one go = 4 steps, state_dict through torch.save, a fresh optimizer with other hypers, 5 more steps."
    kw = dict(lr=0.05, total_steps=9, p_max=6., momentum=0.9, weight_decay=0.01, steps_per_epoch=2)
    grads = random_grads(SHAPES, 9, seed=1)
    pa = leaves(init)
    opt_a = LPSGD(pa, **kw); steps(opt_a, pa, grads)
    pb = leaves(init)
    opt_b = LPSGD(pb, **kw); steps(opt_b, pb, grads[:4])
    buf = io.BytesIO(); torch.save({'params': [p.detach() for p in pb], 'opt': opt_b.state_dict()}, buf); buf.seek(0)
    ck = torch.load(buf)
    pc = [x.clone().requires_grad_() for x in ck['params']]
    opt_c = LPSGD(pc, lr=1., total_steps=1000, p_max=3.)       # deliberately different: the state_dict must win
    opt_c.load_state_dict(ck['opt'])
    eq(int(opt_c.param_groups[0]['step']), 4); eq(opt_c.param_groups[0]['total_steps'], 9)
    steps(opt_c, pc, grads[4:])
    for x, y in zip(pa, pc): assert torch.equal(x, y)
    for x, y in zip(pa, pc): assert torch.equal(opt_a.state[x]['momentum_buffer'], opt_c.state[y]['momentum_buffer'])
    eq(opt_c.current_p(), opt_a.current_p())


# ---- bad input fails loudly
@pytest.mark.parametrize('kw, msg', [
    (dict(lr=-0.1), 'Invalid lr value: -0.1'),
    (dict(p_max=1.5), 'Invalid p_max value: 1.5'),
    (dict(p_max=math.inf), 'Invalid p_max value: inf'),
    (dict(momentum=1.), 'Invalid momentum value: 1.0'),
    (dict(momentum=-0.1), 'Invalid momentum value: -0.1'),
    (dict(eps=-1e-8), 'Invalid eps value: -1e-08'),
    (dict(weight_decay=-1e-4), 'Invalid weight_decay value: -0.0001'),
    (dict(total_steps=0), 'Invalid total_steps value: 0'),
    (dict(total_steps=10, steps_per_epoch=2.5), 'Invalid steps_per_epoch value: 2.5')])
def test_bad_hyperparameters(kw, msg):
    with pytest.raises(ValueError) as e: LPSGD([torch.zeros(3, requires_grad=True)], **kw)
    assert msg in str(e.value), (msg, str(e.value))


def test_no_schedule_length():
    "A schedule with no length raises a RuntimeError that says what is missing."
    P = [torch.zeros(3, requires_grad=True)]; P[0].grad = torch.ones(3)
    with pytest.raises(RuntimeError) as e: LPSGD(P, lr=0.1).step()
    assert 'total_steps is not set' in str(e.value)


def test_sparse_gradients_refused():
    emb = torch.nn.Embedding(5, 2, sparse=True); emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError) as e: LPSGD(emb.parameters(), total_steps=3).step()
    assert 'LPSGD does not support sparse gradients' in str(e.value)


# ---- awkward input does not produce NaN
@pytest.mark.parametrize('foreach', [False, True])
@pytest.mark.parametrize('eps', [1e-8, 0.])
@pytest.mark.parametrize('dt', [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_zero_and_extreme_gradients(dt, eps, foreach):
    "All-zero gradients leave the parameters where they are (eps=0 too); tiny and huge gradients stay finite."
    fi = torch.finfo(dt)
    x = torch.tensor([1., -2., 0.5], dtype=dt, requires_grad=True); x0 = x.detach().clone()
    opt = LPSGD([x], lr=0.1, total_steps=6, momentum=0.9, eps=eps, foreach=foreach)
    for _ in range(3): x.grad = torch.zeros_like(x); opt.step()
    assert torch.equal(x.detach(), x0), (dt, eps)
    for gval in (fi.tiny, fi.max/8, -fi.max/8, 1e-30):
        x.grad = torch.full_like(x, gval); opt.step()
        assert torch.isfinite(x).all(), (dt, eps, gval)


@pytest.mark.parametrize('dt', [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_lp_scale_at_dtype_edges(dt):
    "The map m/(|m|+eps)^rho: finite at 0, the smallest normal and a quarter of the largest number, 0 at 0 (eps=0 too)."
    fi = torch.finfo(dt)
    x = torch.tensor([0., fi.tiny, -fi.tiny, 1., -fi.max/4, fi.max/4], dtype=dt)
    for rho in (0.5, 0.8, 1.):
        for e in (0., 1e-8):
            u = lp_scale([x], rho, e)[0]
            assert torch.isfinite(u).all(), (dt, rho, e)
            eq(u[0].item(), 0.)


def test_maximize_is_minimising_minus_f():
    x1 = torch.tensor([1., -2.], requires_grad=True); x2 = torch.tensor([1., -2.], requires_grad=True)
    o1 = LPSGD([x1], lr=0.1, total_steps=3, maximize=True); o2 = LPSGD([x2], lr=0.1, total_steps=3)
    for _ in range(3):
        x1.grad = torch.tensor([0.3, -4.]); x2.grad = -x1.grad; o1.step(); o2.step()
    assert torch.equal(x1, x2)
