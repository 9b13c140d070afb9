"""GSGD and Gradual Adam: past the schedule's end, edge cases, errors and exact resume (moved from nbs/02_gsgd.ipynb).

The lecture keeps the derivation and one reference check (float64, against `ref_gsgd` and `ref_gadam`); these are the
rest of its checks, with the notebook's tolerances. Three cases needed care, each checked against a computation that
does not share the code path:

* A norm that overflows fp64: Eq. 4's sums combine per-tensor pieces as logarithms, so the step for 1e300*g must be
  1e300 times the step for g (Eq. 4 is positively homogeneous of degree 1; Algorithm 1 alone of degree e_t).
* NaN at the first step: at t=1 the map is sign, and torch.sign(nan) is 0; the `sign` stage keeps NaN (and turns Inf
  into NaN), so a NaN or Inf gradient entry is never hidden, for every rescale, with foreach on and off.
* Adam's g^2: Gradual Adam keeps the root of its second moment (updated with hypot), so fp32 gradients of 1e30 give the
  iterates of the same run in fp64, where g^2 fits.
"""
import io
import pytest, torch
from fastcore.test import test_close as assert_close, test_eq as assert_eq, test_fail as assert_fails   # not collected

from gradual_opt.gsgd import GSGD, GAdam

RESCALES = ('global', 'group', 'tensor', None)


@pytest.mark.parametrize('kw', [dict(momentum=0.9), dict(momentum=0.9, nesterov=True),
                                dict(momentum=0.5, dampening=0.2)])
def test_past_the_end_is_torch_sgd(kw):
    "Past N the exponent and the factor are 1: GSGD is torch's SGD, a constant offset (from the sign step 1) apart."
    torch.manual_seed(2); grads = [torch.randn(7) for _ in range(6)]
    wg, ws = torch.nn.Parameter(torch.zeros(7)), torch.nn.Parameter(torch.zeros(7))
    og, os_ = GSGD([wg], lr=0.1, total_steps=1, rescale=None, **kw), torch.optim.SGD([ws], lr=0.1, **kw)
    for k, g in enumerate(grads):
        wg.grad, ws.grad = g.clone(), g.clone(); og.step(); os_.step()
        if k == 0:                                   # first direction d = g, or g + mu*g with Nesterov
            d = g*(1 + kw['momentum']) if kw.get('nesterov') else g
            offset = (wg - ws).detach().clone(); assert_close(offset, -0.1*(d.sign() - d))
        else: assert_close(wg - ws, offset, eps=1e-6)


@pytest.mark.parametrize('rescale', RESCALES)
@pytest.mark.parametrize('scale', [0.0, 1e-30, 1e-3, 1e30])
@pytest.mark.parametrize('steps', [1, 3])
def test_gsgd_finite_at_any_scale(rescale, scale, steps):
    "fp32 gradients from 1e-30 to 1e30 give finite steps; an all-zero gradient leaves the weights alone."
    w = torch.nn.Parameter(torch.zeros(5)); opt = GSGD([w], lr=1e-3, total_steps=4, momentum=0.9, rescale=rescale)
    for _ in range(steps): w.grad = torch.tensor([1., -0.5, 0.25, 0., 2.])*scale; opt.step()
    assert torch.isfinite(w).all(), (rescale, scale, w)
    if scale == 0: assert_eq(w.detach(), torch.zeros(5))


def test_gsgd_fp32_norm_past_overflow():
    "||g||_2 = 5e30: naive fp32 norms overflow, Eq. 4's step still has SGD's length."
    w = torch.nn.Parameter(torch.zeros(3)); opt = GSGD([w], lr=1.0, total_steps=4)
    w.grad = torch.tensor([3e30, -4e30, 0.]); opt.step()
    assert_close(w.detach().double().norm(), 5e30, eps=1e25)


def test_gadam_zero_and_tiny():
    w = torch.nn.Parameter(torch.zeros(3)); opt = GAdam([w], lr=1e-3, total_steps=4)
    w.grad = torch.zeros(3); opt.step(); assert_eq(w.detach(), torch.zeros(3))
    w.grad = torch.full((3,), 1e-30); opt.step(); assert torch.isfinite(w).all()


def _gsgd_deltas(c, T=7, **kw):
    "The change of the flattened parameters at each of T steps, gradients G*c (two tensors on different scales)."
    torch.manual_seed(0)
    G = [torch.randn(4, 3, dtype=torch.float64), torch.randn(5, dtype=torch.float64)*1e-3]
    ps = [torch.nn.Parameter(torch.zeros_like(g)) for g in G]
    opt = GSGD(ps, lr=1e-3, total_steps=5, momentum=0.5, **kw); out = []
    for _ in range(T):
        before = torch.cat([p.detach().flatten() for p in ps])
        for p, g in zip(ps, G): p.grad = g*c
        opt.step(); out.append(torch.cat([p.detach().flatten() for p in ps]) - before)
    return out


@pytest.mark.parametrize('c', [1e300, 1e307])          # 1e307: the norms themselves pass fp64's max
@pytest.mark.parametrize('foreach', [False, True])
@pytest.mark.parametrize('rescale', RESCALES)
def test_gsgd_homogeneous_past_fp64_max(c, foreach, rescale):
    "The step for c*g is c^deg times the step for g (deg 1 with Eq. 4, e_t = (t-1)/N for Algorithm 1 alone)."
    pairs = zip(_gsgd_deltas(1., rescale=rescale, foreach=foreach), _gsgd_deltas(c, rescale=rescale, foreach=foreach))
    for t, (d1, dc) in enumerate(pairs, 1):
        assert torch.isfinite(dc).all(), (c, foreach, rescale, t)
        deg = 1 if rescale is not None else min(1, (t - 1)/5)
        assert_close(dc/c**deg, d1, eps=1e-12*d1.abs().max())


@pytest.mark.parametrize('foreach', [False, True])
def test_gsgd_mixed_fp32_fp16(foreach):
    "The factor comes from the fp32 tensor and exceeds fp16's range; the fp16 step does not."
    ps = [torch.nn.Parameter(torch.ones(4)), torch.nn.Parameter(torch.ones(2, dtype=torch.float16))]
    opt = GSGD(ps, lr=1e-3, total_steps=10, foreach=foreach)
    ps[0].grad, ps[1].grad = torch.full((4,), 1e6), torch.tensor([1., 0.], dtype=torch.float16)
    for _ in range(3): opt.step()
    assert all(torch.isfinite(p).all() for p in ps), (foreach, ps)
    assert_eq(ps[1][1].item(), 1.0)                                      # a zero gradient entry stays put


@pytest.mark.parametrize('foreach', [False, True])
@pytest.mark.parametrize('rescale', RESCALES)
@pytest.mark.parametrize('t', [1, 2])
@pytest.mark.parametrize('bad', [float('nan'), float('inf')])
def test_gsgd_nan_inf_not_hidden(foreach, rescale, t, bad):
    "A NaN or Inf gradient entry gives a NaN step there; only a factor shared by both tensors spreads it."
    w = torch.nn.Parameter(torch.zeros(2, 3)); v = torch.nn.Parameter(torch.zeros(4))
    opt = GSGD([w, v], lr=0.1, total_steps=5, rescale=rescale, foreach=foreach)
    for k in range(t):
        w.grad, v.grad = torch.ones(2, 3), torch.ones(4)
        if k == t - 1: w.grad[0, 1] = bad
        opt.step()
    assert not torch.isfinite(w[0, 1]), (foreach, rescale, t, bad)
    assert torch.isfinite(v).all() or rescale in ('global', 'group')


@pytest.mark.parametrize('foreach', [False, True])
def test_gadam_fp32_at_1e30_equals_fp64(foreach):
    "fp64 holds g^2 = 1e60: the independent run; fp32 with the root of v gives the same iterates."
    torch.manual_seed(0)
    G = [torch.randn(6, 3) for _ in range(7)]
    res = []
    for dtype, c in ((torch.float32, 1e30), (torch.float64, 1e30)):
        w = torch.nn.Parameter(torch.zeros(6, 3, dtype=dtype))
        opt = GAdam([w], lr=1e-2, total_steps=5, eps=0., foreach=foreach)
        for g in G: w.grad = g.to(dtype)*c; opt.step()
        res.append(w.detach().double())
    assert torch.isfinite(res[0]).all() and torch.isfinite(opt.state[w]['rms']).all()
    assert_close(res[0], res[1], eps=1e-5*res[1].abs().max())


def _gadam_run(convert_at=None, steps=6):
    torch.manual_seed(1); w = torch.nn.Parameter(torch.randn(5, dtype=torch.float64))
    opt = GAdam([w], lr=1e-2, total_steps=8)
    for k in range(steps):
        if k == convert_at:
            sd = opt.state_dict(); st = sd['state'][0]; st['exp_avg_sq'] = st.pop('rms')**2
            opt = GAdam([w], lr=1e-2, total_steps=8); opt.load_state_dict(sd)
        w.grad = torch.sin(torch.arange(5.) + k).double(); opt.step()
    return w.detach()


def test_gadam_loads_state_saved_with_v():
    "A state saved with v_t itself (before the root was kept) continues as if it had been saved with r_t."
    assert_close(_gadam_run(3), _gadam_run(), eps=1e-12)


_P0 = lambda: [torch.nn.Parameter(torch.zeros(2))]

@pytest.mark.parametrize('bad,msg', [(dict(lr=-1), 'lr'), (dict(momentum=1.0), 'momentum'),
                                     (dict(weight_decay=-1e-4), 'weight_decay'), (dict(rescale='layer'), 'rescale'),
                                     (dict(shard_group='world'), 'shard_group'),
                                     (dict(shard_group=True), 'init_process_group'),
                                     (dict(total_steps=0), 'total_steps'), (dict(nesterov=True), 'Nesterov')])
def test_gsgd_errors(bad, msg):
    assert_fails(lambda: GSGD(_P0(), **{'lr': 0.1, 'total_steps': 10, **bad}), contains=msg)


@pytest.mark.parametrize('bad,msg', [(dict(betas=(1.0, 0.9)), 'beta1'), (dict(betas=(0.9, -0.1)), 'beta2'),
                                     (dict(eps=-1), 'eps')])
def test_gadam_errors(bad, msg):
    assert_fails(lambda: GAdam(_P0(), **{'lr': 0.1, 'total_steps': 10, **bad}), contains=msg)


def test_gsgd_refuses_sparse():
    e = torch.nn.Embedding(5, 2, sparse=True); e(torch.tensor([1])).sum().backward()
    assert_fails(lambda: GSGD(e.parameters(), lr=0.1, total_steps=3).step(), contains='sparse')


def _data_stream(n, seed=0):
    "A fixed stream of `n` minibatches, so a resumed run sees the same data as an uninterrupted one."
    g = torch.Generator().manual_seed(seed)
    X, Y = torch.randn(64, 8, generator=g), torch.randn(64, 1, generator=g)
    return [(X[i], Y[i]) for i in (torch.randint(0, 64, (16,), generator=g) for _ in range(n))]

def _make_model(seed):
    torch.manual_seed(seed); return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))

def _fit(model, opt, data):
    for x, y in data: opt.zero_grad(); torch.nn.functional.mse_loss(model(x), y).backward(); opt.step()


@pytest.mark.parametrize('opt_fn', [
    lambda p: GSGD(p, lr=0.05, total_steps=10, momentum=0.9, nesterov=True, weight_decay=1e-2),
    lambda p: GSGD(p, lr=0.05, total_steps=10, rescale='tensor'),
    lambda p: GAdam(p, lr=0.01, total_steps=10, weight_decay=1e-2)], ids=['gsgd-nesterov', 'gsgd-tensor', 'gadam'])
def test_exact_resume(opt_fn):
    "Ten steps in one go equal four, a save to bytes, a fresh model and optimizer, a load and six more: bit for bit."
    data = _data_stream(10)
    m1 = _make_model(0); _fit(m1, opt_fn(m1.parameters()), data)                 # uninterrupted
    m2 = _make_model(0); o2 = opt_fn(m2.parameters()); _fit(m2, o2, data[:4])    # interrupted after 4 steps
    buf = io.BytesIO(); torch.save({'model': m2.state_dict(), 'opt': o2.state_dict()}, buf); buf.seek(0)
    ck = torch.load(buf)
    m3 = _make_model(123); m3.load_state_dict(ck['model']); o3 = opt_fn(m3.parameters()); o3.load_state_dict(ck['opt'])
    _fit(m3, o3, data[4:])                                                       # resumed
    for x, y in zip(m1.parameters(), m3.parameters()): assert torch.equal(x, y)
    assert_eq(int(o3.param_groups[0]['step']), 10)
