"""S3's tests, moved from `nbs/04_s3.ipynb` and `nbs/04a_s3_untied.ipynb` (the notebooks keep the derivations, the float64
check against `ref_s3`, the figures, experiments and claim rows):

* Theorems 1 and 2 as hypothesis property tests on plain per-coordinate loops (Adam's Eq. 2 and Algorithm 1), and
  Theorem 2's bound on the optimizer itself, also with a β changed between steps;
* fp32 against `ref_s3`, scale invariance and no NaN at the edges of fp32, fp16 and bf16;
* exact resume, checkpoints and pickles from before `beta` was renamed `momentum`, bad input, `step(closure)`;
* the paper's weight-decay rule, torch's one-cycle momentum schedules, and `S3Untied` with tied betas being S3.
"""
import copy, io, math, pickle
from decimal import Decimal, localcontext
import pytest, torch
from hypothesis import given, settings, example, strategies as st, HealthCheck
from fastcore.test import test_close as close, test_eq as eq   # aliases: pytest would collect test_*

from references import ref_s3
from gradual_opt.s3 import S3, adam_update_bound, s3_update_bound, s3_weight_decay
from gradual_opt.s3_untied import S3Untied

F64 = torch.float64


# ---- the plain loops of the notebook (04_s3 defines them too, for its figures and claim rows)
def adam_ratio_loop(gs, beta1, beta2):
    "|m_t|/sqrt(v_t) of bias-corrected Adam after the whole sequence `gs` (one coordinate, plain floats)."
    m = v = 0.0
    for t, g in enumerate(gs, 1): m = beta1*m + (1-beta1)*g; v = beta2*v + (1-beta2)*g*g
    mh, vh = m/(1-beta1**t), v/(1-beta2**t)
    return abs(mh)/math.sqrt(vh) if vh > 0 else 0.0

def s3_ratio_loop(gs, beta1, beta2, p, betas_t=None):
    "|n_t|/b_t(p) after the whole sequence `gs` (plain floats); `betas_t` optionally gives one shared beta per step."
    m = s = 0.0
    for i, g in enumerate(gs):
        if betas_t is not None: beta1 = beta2 = betas_t[i]
        m = beta1*m + (1-beta1)*g; s = beta2*s + (1-beta2)*abs(g)**p
        n = beta1*m + (1-beta1)*g; b = (beta2*s + (1-beta2)*abs(g)**p)**(1/p)
    return abs(n)/b if b > 0 else 0.0

def b_loop(gs, beta, p):
    "b_t(p) of Algorithm 1 after the sequence `gs`, in 60-digit decimals: floats underflow (e.g. beta^2 |g|^p below 1e-324)."
    with localcontext() as ctx:
        ctx.prec = 60
        beta, p, s = Decimal(beta), Decimal(p), Decimal(0)
        for g in gs: s = beta*s + (1 - beta)*abs(Decimal(g))**p
        return (beta*s + (1 - beta)*abs(Decimal(gs[-1]))**p)**(1/p)


# ---- property tests of Theorems 1 and 2
_mag = st.one_of(st.just(0.0), st.builds(lambda m, e, sg: sg*m*10.0**e,             # 0, or log-uniform in [1e-30, 1e4]
                                         st.floats(1.0, 10.0), st.integers(-30, 3), st.sampled_from([-1.0, 1.0])))
def grad_seqs(max_len=40):
    "Hypothesis strategy: random, geometric (growing or shrinking, with sign flips) and spiky gradient sequences."
    rand = st.lists(_mag, min_size=1, max_size=max_len)
    geom = st.builds(lambda g0, r, n, flips: [g0 * r**k * (-1)**(k in flips) for k in range(n)],
                     st.floats(1e-3, 1e3), st.floats(0.5, 2.0), st.integers(1, max_len),
                     st.sets(st.integers(0, max_len-1), max_size=3))
    spiky = st.builds(lambda base, n, at, big: [base]*n + [big] + [base]*at,
                      st.floats(1e-3, 1.0), st.integers(0, max_len//2), st.integers(0, max_len//2), st.floats(1.0, 1e3))
    return st.one_of(rand, geom, spiky)

_set = settings(max_examples=60, deadline=None, derandomize=True, database=None,  # same examples every run: CI must not flake
                suppress_health_check=[HealthCheck.too_slow])
_ps = st.floats(1.0, 8.0)

@_set
@given(grad_seqs(), st.floats(0.0, 0.99), st.floats(0.0, 0.999))
def test_adam_bound(gs, b1, b2):
    "Theorem 1: no gradient sequence pushes bias-corrected Adam past B_t (Eq. 3)."
    if not b1**2 < b2: return
    assert adam_ratio_loop(gs, b1, b2) <= adam_update_bound(b1, b2, len(gs))*(1 + 1e-10)

@_set
@given(grad_seqs(), st.floats(0.0, 0.99), st.floats(0.0, 0.999), _ps)
def test_thm2_bound(gs, b1, b2, p):
    "Theorem 2(1): two betas, any admissible pair, stay within Eq. 4."
    try: B = s3_update_bound(b1, b2, p, t=len(gs))
    except ValueError: return                            # outside the theorem's range
    assert s3_ratio_loop(gs, b1, b2, p) <= B*(1 + 1e-10)

@_set
@given(grad_seqs(), st.floats(0.0, 0.999), _ps)
def test_thm2_one_beta(gs, b, p):
    "Theorem 2(2): one beta gives at most 1."
    assert s3_ratio_loop(gs, b, b, p) <= 1 + 1e-12

@_set
@given(grad_seqs(), st.floats(0.0, 0.999), _ps, _ps)
@example([-1e-15, 0.0], 7.6e-141, 1.0, 3.0)   # found by a random seed: with floats, b_t(3) underflowed to 0 < b_t(1)
def test_thm2_monotone(gs, b, p1, p2):
    "Theorem 2(3): b_t(p) is non-decreasing in p."
    p1, p2 = min(p1, p2), max(p1, p2)
    assert b_loop(gs, b, p1) <= b_loop(gs, b, p2)*(1 + Decimal('1e-20'))

@_set
@given(grad_seqs(), st.lists(st.floats(0.0, 0.999), min_size=48, max_size=48), _ps)
def test_thm2_time_varying(gs, betas, p):
    "Theorem 2(4): a shared but changing beta_t keeps the ratio at most 1."
    assert s3_ratio_loop(gs, None, None, p, betas_t=betas) <= 1 + 1e-12

@_set
@given(grad_seqs(), st.floats(0.0, 0.999), _ps, st.booleans(),
       st.one_of(st.none(), st.lists(st.floats(0.0, 0.99), min_size=48, max_size=48)))
def test_s3_step_at_most_lr(gs_, beta, p, nesterov, betas_t):
    "The bound on the optimizer: no coordinate moves more than lr, also when `momentum` changes between steps."
    x = torch.zeros(1, dtype=F64, requires_grad=True)
    opt = S3([x], lr=0.5, momentum=beta, p=p, nesterov=nesterov, eps=0.0)
    for i, g in enumerate(gs_):
        if betas_t is not None: opt.param_groups[0]['momentum'] = betas_t[i]
        before = x.detach().clone(); x.grad = torch.tensor([g], dtype=F64); opt.step()
        assert ((x.detach() - before).abs() <= 0.5*(1 + 1e-12)).all()


# ---- against the reference in fp32 (the notebook checks float64)
def _alg1_problem():
    "The notebook's gradients: eight orders of magnitude within the tensor, jumps and an exact zero."
    gen = torch.Generator().manual_seed(1)
    gs = torch.randn(8, 6, generator=gen, dtype=F64) * torch.tensor([1e-3, 1e-1, 1., 10., 1e2, 1e3], dtype=F64)
    gs[3, 2] = 0.; gs[:, 0] *= torch.tensor([1., 1., 50., 1., 1., 1., 1e-2, 1.], dtype=F64)
    return torch.randn(6, generator=gen, dtype=F64), gs

def run_s3(x0, gs, **kw):
    x = x0.clone().requires_grad_(); opt = S3([x], **kw); out = []
    for g in gs: x.grad = g.clone(); opt.step(); out.append(x.detach().clone())
    return torch.stack(out), opt

@pytest.mark.parametrize('nesterov', [True, False])
@pytest.mark.parametrize('p', [1, 2, 2.5, 3])    # larger p: a range of 1e8 in one tensor is more than fp32 holds in |g|^p
def test_fp32_against_reference(p, nesterov):
    x0, gs = _alg1_problem()
    ref = ref_s3([x0.tolist()], [[g] for g in gs.tolist()], 0.1, beta1=0.9, p=p, weight_decay=0.05, nesterov=nesterov, eps=0.0)
    ref = torch.tensor([w[0] for w in ref], dtype=F64)
    kw = dict(lr=0.1, momentum=0.9, p=p, nesterov=nesterov, weight_decay=0.05)
    close(run_s3(x0.float(), gs.float(), eps=0.0, **kw)[0], ref.float(), eps=1e-5)


# ---- scale invariance, no NaN at the edges of fp32, half precision
G32 = torch.randn(20, 7, generator=torch.Generator().manual_seed(2))
def fp32_run(scale, p=3, **kw):
    x = torch.zeros(7, requires_grad=True); opt = S3([x], lr=0.1, p=p, **kw)
    for g in G32: x.grad = g*scale; opt.step()
    return x.detach()

@pytest.mark.parametrize('p', [1, 2, 3, 8])
def test_scale_invariance(p):
    "Gradients times 1e-30, 1e-38, 1e30 or 7.5e37 give the unscaled iterates (fp32), all finite."
    base = fp32_run(1.0, p)
    for sc in (1e-30, 1e-38, 1e30, 7.5e37):
        r = fp32_run(sc, p); assert torch.isfinite(r).all(); close(r, base, eps=2e-6)

@pytest.mark.parametrize('eps', [1e-8, 0.0])
def test_zero_gradients_and_huge_range(eps):
    "All-zero gradients: zero steps. 1e30 and 1e-30 in one tensor: finite steps, the tiny coordinate's being 0."
    x = torch.zeros(3, requires_grad=True); opt = S3([x], lr=0.1, eps=eps)
    for _ in range(3): x.grad = torch.zeros(3); opt.step()
    eq(x.detach(), torch.zeros(3))
    x.grad = torch.tensor([1e30, 1e-30, 0.]); opt.step()
    assert torch.isfinite(x).all(); eq(x[1:].detach(), torch.zeros(2))

@pytest.mark.parametrize('shape', [(1,), ()])
def test_one_element_and_0d(shape):
    x = torch.zeros(shape, requires_grad=True); opt = S3([x], lr=0.1)
    for _ in range(3): x.grad = torch.full(shape, 1e-30); opt.step()
    close(x.detach(), torch.full(shape, -0.1*sum((1 - 0.95**(t+1))**(2/3) for t in (1, 2, 3))), eps=1e-5)

@pytest.mark.parametrize('dt', [torch.float16, torch.bfloat16])
def test_half_precision(dt):
    "fp16 and bf16 parameters: finite steps, close to the fp32 ones."
    x = torch.zeros(7, dtype=dt, requires_grad=True); opt = S3([x], lr=0.1)
    for g in G32: x.grad = (g*1e-3).to(dt); opt.step()
    assert torch.isfinite(x).all(); close(x.float(), fp32_run(1.0), eps=0.05)


# ---- resume and old checkpoints
def make_model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
def groups(model): return [{'params': model[0].parameters(), 'p': 2, 'momentum': 0.9},
                           {'params': model[2].parameters(), 'weight_decay': 0.1}]
DATA = torch.randn(10, 32, 5, generator=torch.Generator().manual_seed(3))
def train(model, opt, batches):
    for xb in batches:
        opt.zero_grad(); model(xb).pow(2).mean().backward(); opt.step()

def test_exact_resume():
    "5 steps, state_dict through torch.save, 5 more: a fresh optimizer loaded from the file gives the same bits."
    model = make_model(); opt = S3(groups(model), lr=0.05, eps=1e-8)
    train(model, opt, DATA[:5])
    buf = io.BytesIO(); torch.save({'model': model.state_dict(), 'opt': opt.state_dict()}, buf)
    train(model, opt, DATA[5:])
    buf.seek(0); ck = torch.load(buf)
    model2 = make_model(seed=1); model2.load_state_dict(ck['model'])
    opt2 = S3(groups(model2), lr=0.05); opt2.load_state_dict(ck['opt'])
    train(model2, opt2, DATA[5:])
    for a, b in zip(model.parameters(), model2.parameters()): assert torch.equal(a, b)
    eq(opt2.param_groups[0]['p'], 2); eq(opt2.param_groups[1]['weight_decay'], 0.1)
    eq(opt2.state[next(model2.parameters())]['step'].item(), 10.0)

def test_checkpoint_from_before_the_rename():
    "An old state_dict's `beta` loads as `momentum` (not the defaults), and the run continues bit for bit."
    model = make_model(); opt = S3(groups(model), lr=0.05)
    train(model, opt, DATA[:5])
    sd = copy.deepcopy(opt.state_dict())                                       # torch's state_dict shares the buffers
    old_sd = {**sd, 'param_groups': [{('beta' if k == 'momentum' else k): v for k, v in g.items()} for g in sd['param_groups']]}
    eq([('beta' in g, 'momentum' in g) for g in old_sd['param_groups']], [(True, False)]*2)
    model_old = copy.deepcopy(model); opt_old = S3(groups(model_old), lr=0.05, momentum=0.5)  # not the saved 0.95
    opt_old.load_state_dict(old_sd)
    eq([g['momentum'] for g in opt_old.param_groups], [0.9, 0.95])
    eq(any('beta' in g for g in opt_old.param_groups), False)
    train(model, opt, DATA[5:]); train(model_old, opt_old, DATA[5:])
    for a, b in zip(model.parameters(), model_old.parameters()): assert torch.equal(a, b)

def test_pickle_from_before_the_rename():
    o = S3([torch.nn.Parameter(torch.ones(2))], momentum=0.7)
    o.defaults['beta'] = o.defaults.pop('momentum'); o.param_groups[0]['beta'] = o.param_groups[0].pop('momentum')
    o2 = pickle.loads(pickle.dumps(o))
    eq((o2.defaults['momentum'], o2.param_groups[0]['momentum'], 'beta' in o2.param_groups[0]), (0.7, 0.7, False))

@pytest.mark.parametrize('where', ['keyword', 'group'])
def test_old_name_raises(where):
    "The old name in new code raises a TypeError naming `momentum`."
    w_ = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(TypeError) as e:
        S3(w_, beta=0.9) if where == 'keyword' else S3([{'params': w_, 'beta': 0.9}])
    assert "'beta' was renamed 'momentum'" in str(e.value)


# ---- bad input, sparse gradients, step(closure)
@pytest.mark.parametrize('kw, msg', [
    (dict(p=0.5), 'Invalid p value'), (dict(p=math.inf), 'Invalid p value'),
    (dict(momentum=1.0), 'Invalid momentum value'), (dict(momentum=-0.1), 'Invalid momentum value'),
    (dict(lr=-1e-3), 'Invalid lr value'), (dict(eps=-1e-8), 'Invalid eps value'),
    (dict(weight_decay=-0.1), 'Invalid weight_decay value')])
def test_bad_hyperparameters(kw, msg):
    with pytest.raises(ValueError) as e: S3([torch.zeros(2, requires_grad=True)], **kw)
    assert msg in str(e.value), (msg, str(e.value))

def test_sparse_gradients_refused():
    emb = torch.nn.Embedding(5, 3, sparse=True); emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError) as e: S3(emb.parameters()).step()
    assert 'does not support sparse' in str(e.value)

def test_step_returns_closure_loss():
    x = torch.ones(2, requires_grad=True); opt = S3([x], lr=0.1)
    def closure(): opt.zero_grad(); l = (x**2).sum(); l.backward(); return l
    close(opt.step(closure).item(), 2.0)


# ---- the paper's weight-decay rule, torch's one-cycle schedules
def test_weight_decay_rule():
    "lr_Adam*wd_Adam/lr: S3's decoupled decay shrinks the weights per step exactly as AdamW's."
    close(s3_weight_decay(6e-3, lr_adam=3e-3, wd_adam=0.3), 0.15)              # hand: 3e-3*0.3/6e-3
    x = torch.ones(3, requires_grad=True); x.grad = torch.zeros(3)
    S3([x], lr=6e-3, weight_decay=s3_weight_decay(6e-3, 3e-3, 0.3)).step()
    xa = torch.ones(3, requires_grad=True); xa.grad = torch.zeros(3)
    torch.optim.AdamW([xa], lr=3e-3, weight_decay=0.3).step()
    close(x.detach(), xa.detach(), eps=1e-7)
    with pytest.raises(ValueError, match='lr value'): s3_weight_decay(0.0, 3e-3, 0.3)

@pytest.mark.parametrize('make_sched, lo, hi', [
    (lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=40), 0.85, 0.95),
    (lambda o: torch.optim.lr_scheduler.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=10), 0.8, 0.9)],
    ids=['OneCycleLR', 'CyclicLR'])
def test_torch_cycles_momentum(make_sched, lo, hi):
    "torch's schedulers cycle S3's `momentum`, and no coordinate moves by more than the lr of its step."
    x = torch.zeros(5, dtype=F64, requires_grad=True); opt = S3([x], lr=0.1); sched = make_sched(opt)
    g = torch.Generator().manual_seed(0); moms = []
    for t in range(40):
        moms.append(opt.param_groups[0]['momentum']); lr = opt.param_groups[0]['lr']
        x.grad = torch.randn(5, generator=g, dtype=F64)*10.0**torch.randint(-3, 4, (5,), generator=g)
        before = x.detach().clone(); opt.step(); sched.step()
        assert ((x.detach() - before).abs() <= lr*(1 + 1e-12)).all()
    close(min(moms), lo, eps=1e-9); close(max(moms), hi, eps=1e-9); close(moms[0], hi, eps=1e-9)


# ---- S3Untied (04a_s3_untied)
def pair_run(make_opt, seed=0, steps=10):
    g = torch.Generator().manual_seed(seed)
    ps = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in [(5, 3), (7,), ()]]
    opt = make_opt([{'params': ps[:2]}, {'params': ps[2:], 'weight_decay': 0.1}])
    for _ in range(steps):
        for i, p in enumerate(ps): p.grad = torch.randn(p.shape, generator=g)*10.0**i
        opt.step()
    return [p.detach() for p in ps]

@pytest.mark.parametrize('b, p, nesterov', [(0.95, 3, True), (0.9, 2, False), (0.5, 1, True), (0.99, 7, True)])
def test_untied_with_tied_betas_is_s3(b, p, nesterov):
    "S3Untied(betas=(b, b)) and S3(momentum=b): the same iterates bit for bit (fp32, two groups, decay)."
    kw = dict(lr=0.01, p=p, nesterov=nesterov, weight_decay=0.01)
    for a, c in zip(pair_run(lambda gr: S3Untied(gr, betas=(b, b), **kw)), pair_run(lambda gr: S3(gr, momentum=b, **kw))):
        assert torch.equal(a, c)
