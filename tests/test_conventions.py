"""torch.optim conventions for every registered optimizer and for `with_transforms` compositions: state dicts that
load any number of times (also after deepcopy/pickle of the optimizer), older checkpoints, picklable and copyable
transformed classes, step hooks, torch.distributed.checkpoint, tensor lr, complex parameters refused, tracing without
graph breaks, and a sparse gradient in a later param group refused before anything moves."""
import copy, pickle
import pytest, torch, torch.nn as nn
import torch._dynamo

from gradual_opt.core import GradualOptimizer
from gradual_opt.registry import registry
from gradual_opt.baselines import Adan
from gradual_opt.gsgd import GSGD
from gradual_opt.s3 import S3
from gradual_opt.transforms import AGR, AutoscaleNorm, Centralize, GradTransform, TransformedOptimizer, with_transforms, _unhooked

torch.set_num_threads(1)

# ---------------------------------------------------------------------------------------------------------------
# The cases: every registry('optimizer') entry, and four with_transforms compositions.
# Each case: (factory() -> class, kwargs). A factory so that each test may build a fresh class where it must.
ENTRIES = registry('optimizer')
COMPOSITIONS = {
    'SGD+Centralize+AGR': (lambda: with_transforms(torch.optim.SGD, Centralize(), AGR()), dict(lr=0.1, momentum=0.9)),
    'Adan+AGR':           (lambda: with_transforms(Adan, AGR()), dict(lr=1e-2)),
    'GSGD+AutoscaleNorm': (lambda: with_transforms(GSGD, AutoscaleNorm()), dict(lr=0.05, total_steps=6)),
    'S3+AGR-until':       (lambda: with_transforms(S3, AGR(until=0.5, total_steps=6)), dict(lr=0.01)),
}
CASES = {**{e.name: ((lambda c=e.cls: c), dict(e.test_kwargs)) for e in ENTRIES}, **COMPOSITIONS}
ALL = list(CASES)
COMP = list(COMPOSITIONS)


def make(name, params, cls=None, **over):
    factory, kw = CASES[name]
    return (cls or factory())(params, **{**kw, **over})


def make_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2)).double()


def groups(model):
    "Two param groups (one per layer), so that the per-group paths are exercised."
    return [{'params': list(model[0].parameters())}, {'params': list(model[1].parameters())}]


_g = torch.Generator().manual_seed(1234)
X, Y = torch.randn(8, 4, generator=_g, dtype=torch.float64), torch.randn(8, 2, generator=_g, dtype=torch.float64)


def grads(model):
    model.zero_grad(set_to_none=True)
    ((model(X) - Y) ** 2).mean().backward()


def run(model, opt, n):
    for _ in range(n):
        grads(model); opt.step()


def params(model): return [p.detach().clone() for p in model.parameters()]


def assert_same(m1, m2):
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(a, b), (a - b).abs().max()


def reference(name, n=6, **over):
    m = make_model(); run(m, make(name, groups(m), **over), n)
    return m


def fresh_like(model, name, **over):
    "A model with `model`'s current parameters and a fresh optimizer on it."
    m = copy.deepcopy(model)
    return m, make(name, groups(m), **over)


def ours(name): return isinstance(make(name, groups(make_model())), GradualOptimizer)


# ---------------------------------------------------------------------------------------------------------------
# 1. load_state_dict any number of times, also into deep copies and unpickled copies of the optimizer
@pytest.mark.parametrize('name', ALL)
def test_load_state_dict_repeatedly(name):
    ref = reference(name)
    m = make_model(); opt = make(name, groups(m)); run(m, opt, 3)
    sd = copy.deepcopy(opt.state_dict())
    snapshot = copy.deepcopy(sd)

    # torch's load_state_dict keeps the checkpoint's tensors (no copy when dtype and device match): each optimizer
    # gets its own copy of the checkpoint, else the three would share their buffers
    m1, o1 = fresh_like(m, name)
    sd1 = copy.deepcopy(sd); o1.load_state_dict(sd1); o1.load_state_dict(sd1)
    m2, o2 = copy.deepcopy((m, opt))                    # the optimizer itself, with its model
    sd2 = copy.deepcopy(sd); o2.load_state_dict(sd2); o2.load_state_dict(sd2)
    m3, o3 = pickle.loads(pickle.dumps((m, opt)))
    sd3 = copy.deepcopy(sd); o3.load_state_dict(sd3); o3.load_state_dict(sd3)
    for d in (sd1, sd2, sd3): assert repr(d) == repr(snapshot)   # loading does not alter the checkpoint
    for mm, oo in ((m1, o1), (m2, o2), (m3, o3), (m, opt)):
        run(mm, oo, 3); assert_same(mm, ref)


# ---------------------------------------------------------------------------------------------------------------
# 2. Older checkpoints: no torch flags, no class name; an int group step
@pytest.mark.parametrize('drop_name', [False, True], ids=['class-name-kept', 'class-name-dropped'])
@pytest.mark.parametrize('name', ALL)
def test_older_checkpoint_without_flags(name, drop_name):
    ref = reference(name)
    m = make_model(); opt = make(name, groups(m)); run(m, opt, 3)
    sd = copy.deepcopy(opt.state_dict())
    if drop_name: sd.pop('optimizer', None)
    for g in sd['param_groups']:
        for k in ('maximize', 'foreach'): g.pop(k, None)
    m1, o1 = fresh_like(m, name)
    o1.load_state_dict(sd)
    assert all(g['maximize'] is False and g['foreach'] is None for g in o1.param_groups)
    run(m1, o1, 3); assert_same(m1, ref)


@pytest.mark.parametrize('name', ALL)
def test_older_checkpoint_int_step(name):
    if not ours(name): pytest.skip("torch's SGD has no group step counter")
    ref = reference(name)
    m = make_model(); opt = make(name, groups(m)); run(m, opt, 3)
    sd = copy.deepcopy(opt.state_dict())
    for g in sd['param_groups']:
        assert torch.is_tensor(g['step']) and g['step'].dtype == torch.float64 and g['step'].ndim == 0   # exact to 2**53 steps
        g['step'] = int(g['step'])
    for st in sd['state'].values():                    # per-tensor counters, where a class keeps them: ints too
        if 'step' in st: st['step'] = int(st['step'])
    m1, o1 = fresh_like(m, name)
    o1.load_state_dict(sd)
    for g in o1.param_groups:
        assert torch.is_tensor(g['step']) and g['step'].dtype == torch.float64 and float(g['step']) == 3
    run(m1, o1, 3); assert_same(m1, ref)


# ---------------------------------------------------------------------------------------------------------------
# 3. with_transforms classes: pickle, deepcopy, step hooks
@pytest.mark.parametrize('name', COMP)
def test_transformed_pickle_and_deepcopy(name):
    ref = reference(name)
    m = make_model(); opt = make(name, groups(m)); run(m, opt, 3)
    assert all(t.step == 3 for t in opt.grad_transforms)
    m2, o2 = pickle.loads(pickle.dumps((m, opt)))
    m3, o3 = copy.deepcopy((m, opt))
    for o in (o2, o3):
        assert isinstance(o, TransformedOptimizer) and type(o).__name__ == type(opt).__name__
        assert len(o.grad_transforms) == len(opt.grad_transforms)
        for t, t0 in zip(o.grad_transforms, opt.grad_transforms):
            assert t is not t0 and type(t) is type(t0)
            assert repr(t.state_dict()) == repr(t0.state_dict())     # e.g. AGR's step, AutoscaleNorm's p_t
            assert t.step == 3
    for mm, oo in ((m2, o2), (m3, o3), (m, opt)):
        run(mm, oo, 3); assert_same(mm, ref)
    assert all(t.step == 6 for t in opt.grad_transforms) and all(t.step == 6 for t in o2.grad_transforms)


def count_hooks(opt):
    n = {'pre': 0, 'post': 0}
    opt.register_step_pre_hook(lambda *a: n.__setitem__('pre', n['pre'] + 1))
    opt.register_step_post_hook(lambda *a: n.__setitem__('post', n['post'] + 1))
    return n


@pytest.mark.parametrize('base_first', [True, False], ids=['base-instance-first', 'transformed-first'])
@pytest.mark.parametrize('name', ALL)
def test_step_hooks_fire_once(name, base_first):
    "torch wraps each class's `step` once, at its first instance: hooks must fire once per step whichever class came first."
    factory, _ = CASES[name]
    cls = factory()
    base = cls._base_cls if issubclass(cls, TransformedOptimizer) else cls
    Fresh = type(f'Fresh{base.__name__}', (base,), {'step': _unhooked(base.step)})   # its own step, not patched by torch yet
    classes = [Fresh, with_transforms(Fresh, *cls._recipe)] if base is not cls else [Fresh]
    if not base_first: classes = classes[::-1]
    built = []
    for c in classes:                                    # all instances first: each class patched before any step runs
        m = make_model(); opt = make(name, groups(m), cls=c); built.append((c, m, opt, count_hooks(opt)))
    for c, m, opt, n in built:
        run(m, opt, 4)
        assert n == {'pre': 4, 'post': 4}, (c.__name__, n)
    m = make_model(); opt = make(name, groups(m)); n = count_hooks(opt)   # the case's own class, too
    run(m, opt, 2)
    assert n == {'pre': 2, 'post': 2}


# ---------------------------------------------------------------------------------------------------------------
# 4. torch.distributed.checkpoint keeps the transforms' state
def _dcp_call(fn, *args, tmp_path, **kw):
    "get/set_optimizer_state_dict need no process group here; a gloo one (world 1, file store) is made if a torch version asks."
    import torch.distributed as dist
    try: return fn(*args, **kw)
    except (RuntimeError, ValueError) as e:
        if 'process group' not in str(e).lower() or dist.is_initialized(): raise
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/store', rank=0, world_size=1)
    try: return fn(*args, **kw)
    finally: dist.destroy_process_group()


@pytest.mark.parametrize('name', COMP)
def test_distributed_checkpoint_keeps_transforms(name, tmp_path):
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict
    ref = reference(name)
    m = make_model(); opt = make(name, groups(m)); run(m, opt, 4)
    saved = [copy.deepcopy(t.state_dict()) for t in opt.grad_transforms]
    osd = copy.deepcopy(_dcp_call(get_optimizer_state_dict, m, opt, tmp_path=tmp_path))
    m1, o1 = fresh_like(m, name)
    _dcp_call(set_optimizer_state_dict, m1, o1, osd, tmp_path=tmp_path)
    assert_same(m1, m)                                   # loading moved nothing
    assert any('grad_transforms' in g for g in osd['param_groups'])   # they ride in a param group through DCP
    for t, sd in zip(o1.grad_transforms, saved): assert repr(t.state_dict()) == repr(sd)
    if name == 'S3+AGR-until':
        agr_ = o1.grad_transforms[0]
        assert int(agr_.step) == 4 and float(agr_.on()) == 0.   # AGR(until=0.5, N=6): off from step 4 on, also after resume
        # negative control: had the counter been lost, AGR would be on again at step 5 and the run would differ
        m2, o2 = fresh_like(m, name); o2.load_state_dict(copy.deepcopy(opt.state_dict())); o2.grad_transforms[0].step.zero_()
        run(m2, o2, 2)
        assert not all(torch.equal(a, b) for a, b in zip(m2.parameters(), ref.parameters()))
    run(m1, o1, 2); assert_same(m1, ref)                 # the gradient is not transformed at steps 5, 6


# ---------------------------------------------------------------------------------------------------------------
# 5. lr as a tensor
@pytest.mark.parametrize('name', ALL)
def test_tensor_lr_same_iterates(name):
    lr = CASES[name][1]['lr']
    for tlr, flr in ((torch.tensor(lr, dtype=torch.float64), lr),              # the same value
                     (torch.tensor(lr), float(torch.tensor(lr)))):             # float32 tensor: the value it holds
        ref = reference(name, lr=flr)
        m = make_model(); opt = make(name, groups(m), lr=tlr); run(m, opt, 6)
        for a, b in zip(m.parameters(), ref.parameters()):   # the same up to rounding (a tensor takes other kernels)
            torch.testing.assert_close(a, b, rtol=0, atol=1e-14, msg=lambda s: f'lr={tlr!r}: {s}')


# ---------------------------------------------------------------------------------------------------------------
# 6. complex parameters refused at construction
@pytest.mark.parametrize('name', ALL)
def test_complex_params_refused(name):
    if not ours(name): pytest.skip('torch.optim.SGD handles complex parameters itself')
    p = nn.Parameter(torch.randn(3, 2, dtype=torch.complex128))
    with pytest.raises(ValueError, match='view_as_real'): make(name, [p])
    q = nn.Parameter(torch.randn(3, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match='view_as_real'): make(name, [{'params': [q]}, {'params': [p]}])


# ---------------------------------------------------------------------------------------------------------------
# 7. No host synchronisation, no graph break: the whole step traces in one graph.
# backend='eager'-style (a counting backend that returns the traced graph's forward, run by the eager interpreter)
# proves tracing only: dynamo must capture the step with fullgraph=True (any graph break, .item(), .tolist() or
# data-dependent Python control flow raises), without running inductor's slow code generation.
_NO_TRACE = "torch's own SGD.step breaks the graph on purpose (its _use_grad_for_differentiable decorator), not the transforms"
COMPILE_CASES = [pytest.param(n, marks=pytest.mark.xfail(strict=True, raises=torch._dynamo.exc.Unsupported, reason=_NO_TRACE))
                 if n == 'SGD+Centralize+AGR' else n for n in ALL]


@pytest.mark.parametrize('name', COMPILE_CASES)
def test_compiled_step_traces_without_graph_break(name):
    torch._dynamo.reset()
    n = [0]
    def backend(gm, example_inputs):
        n[0] += 1; return gm.forward
    steps = 9                                            # scheduled entries have total_steps=6: cross the schedule's end
    me = make_model(); oe = make(name, groups(me))
    mc = make_model(); oc = make(name, groups(mc))
    step = torch.compile(oc.step, backend=backend, fullgraph=True)
    for k in range(steps):
        grads(me); oe.step()
        grads(mc); step()
        for a, b in zip(me.parameters(), mc.parameters()):
            torch.testing.assert_close(b, a, rtol=0, atol=1e-12, msg=lambda s: f'step {k + 1}: {s}')
    assert 1 <= n[0] <= 2, f'{n[0]} graphs compiled'


# ---------------------------------------------------------------------------------------------------------------
# 8. A sparse gradient in a later param group: refused before any group moves or counts a step
@pytest.mark.parametrize('name', ALL)
def test_sparse_grad_in_later_group(name):
    m = make_model(); opt = make(name, groups(m)); run(m, opt, 2)
    grads(m)
    w = m[1].weight
    w.grad = w.grad.to_sparse()
    before, sd = params(m), copy.deepcopy(opt.state_dict())
    tsteps = [t.step for t in getattr(opt, 'grad_transforms', [])]
    with pytest.raises(RuntimeError, match='sparse'): opt.step()
    for a, b in zip(before, m.parameters()): assert torch.equal(a, b)
    for g, g0 in zip(opt.param_groups, sd['param_groups']):
        if 'step' in g0: assert torch.equal(torch.as_tensor(g['step']), torch.as_tensor(g0['step']))
    after = opt.state_dict()
    for k, st in sd['state'].items():
        for key, v in st.items():
            assert torch.equal(torch.as_tensor(after['state'][k][key]), torch.as_tensor(v)), (k, key)
    assert [t.step for t in getattr(opt, 'grad_transforms', [])] == tsteps


# ---------------------------------------------------------------------------------------------------------------
# 9. The registry: every method is listed, and each entry's documented state is what the optimizer keeps
def test_registry_lists_every_method():
    assert {'GSGD', 'GSGD-momentum', 'GAdam', 'LPSGD', 'LPSGDM', 'S3', 'S3-untied', 'Lion', 'Adan', 'AGRAdamW'} <= {e.name for e in ENTRIES}
    assert {'AGR', 'Centralize', 'AutoscaleNorm'} <= {m.name for m in registry('transform')}
    for m in registry('transform'): assert isinstance(m.cls(**m.test_kwargs), GradTransform)

@pytest.mark.parametrize('entry', ENTRIES, ids=[e.name for e in ENTRIES])
def test_registry_buffers_match_state(entry):
    m = make_model(); opt = entry.cls(groups(m), **entry.test_kwargs); run(m, opt, 2)
    for p in m.parameters():
        full = [k for k, v in opt.state[p].items() if torch.is_tensor(v) and v.shape == p.shape and v.dim() > 0]
        assert len(full) == entry.buffers, (entry.name, full)

def test_nested_with_transforms_is_one_class():
    C = with_transforms(with_transforms(torch.optim.AdamW, Centralize()), AGR())
    assert C._base_cls is torch.optim.AdamW and [type(t) for t in C._recipe] == [Centralize, AGR]
    p = torch.nn.Parameter(torch.ones(3, 2)); opt = C([p], lr=0.1); p.grad = torch.ones(3, 2); opt.step()
    assert [int(t.step) for t in opt.grad_transforms] == [1, 1]


# ---------------------------------------------------------------------------------------------------------------
# 10. Found in review: counters past 2**24, schedules set by hand, transforms' checks, subnormal AGR, devices
def test_counters_count_past_float32():
    "float32 counters stop at 2**24 (16.7M steps); ours are float64, so a long schedule still reaches its end."
    q = nn.Parameter(torch.ones(3)); opt = GSGD([q], lr=0.1, total_steps=20_000_000)
    opt.set_schedule(step=2**24)
    for _ in range(3): q.grad = torch.ones(3); opt.step()
    assert int(opt.param_groups[0]['step']) == 2**24 + 3

def test_set_schedule_after_int_steps():
    q = nn.Parameter(torch.ones(3)); opt = GSGD([q], lr=0.1, total_steps=10)
    opt.param_groups[0]['step'] = 2; opt.set_schedule(step=3); assert int(opt.param_groups[0]['step']) == 3
    t = AGR(until=0.5, total_steps=10); t.step = 4; t.set_schedule(step=5); assert int(t.step) == 5   # an older state held an int

def test_transforms_wait_for_the_optimizers_checks():
    "A step that fails its checks (here: no total_steps) leaves the gradient and the transform's counter untouched."
    q = nn.Parameter(torch.ones(4)); q.grad = torch.arange(1., 5.)
    opt = with_transforms(GSGD, AGR(min_ndim=1))([q], lr=0.1)
    with pytest.raises(RuntimeError, match='total_steps'): opt.step()
    assert torch.equal(q.grad, torch.arange(1., 5.)) and int(opt.grad_transforms[0].step) == 0

def test_agr_on_subnormal_gradients():
    "sum|g| below 2.9e-39: 1/sum|g| overflows fp32, so AGR applies its coefficient as two representable factors."
    from gradual_opt.transforms import agr_, agr
    g = torch.tensor([[1e-40, 3e-40], [2e-40, 0.]])
    for fe in (True, False):
        out = agr_([g.clone()], foreach=fe)[0]
        ref = (g.double() - g.double().abs()/g.double().abs().sum()*g.double())
        assert torch.allclose(out.double(), ref, rtol=1e-3, atol=0), (out, ref)     # subnormals hold ~16 bits
    big = torch.full((4, 4), 1e38); assert torch.allclose(agr_([big.clone()])[0], big*(1 - 1/16))

def test_subclass_of_transformed_class_is_refused_clearly():
    class Mine(with_transforms(torch.optim.SGD, AGR())): pass
    with pytest.raises(TypeError, match='all the transforms at once'): with_transforms(Mine, Centralize())

def test_group_on_two_devices_refused():
    a, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2, device='meta'))
    with pytest.raises(ValueError, match='one device'): GSGD([a, b], lr=0.1, total_steps=3)
    GSGD([{'params': [a]}, {'params': [b]}], lr=0.1, total_steps=3)      # a group per device is fine


# ---------------------------------------------------------------------------------------------------------------
# 11. GSGD: Eq. 4's factor is over the whole gradient (the paper's g), so how the parameters are split into param
# groups does not change the step (HF Trainer, timm and kozistr split decay/no-decay). Against the plain-float
# reference, which sums over every tensor of every group (tests/references.py).
def test_gsgd_eq4_is_independent_of_the_param_group_split():
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from references import ref_gsgd
    g = torch.Generator().manual_seed(7)
    shapes = [(3, 4), (3,), (2, 3), (2,)]                           # two layers: weights (decay) and biases (no decay)
    ws = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    grads = [[torch.randn(s, generator=g, dtype=torch.float64)*sc for s, sc in zip(shapes, (1., 30., 0.01, 2.))] for _ in range(7)]
    grads[2][1] = None                                              # a bias without a gradient at step 3

    def run(groups, **kw):
        ps = [nn.Parameter(w.clone()) for w in ws]
        opt, out = GSGD([{'params': [ps[j] for j in idx], **over} for idx, over in groups], **kw), []
        for step in grads:
            for p, gr in zip(ps, step): p.grad = None if gr is None else gr.clone()
            opt.step(); out.append([p.detach().flatten().tolist() for p in ps])
        return out

    def close(got, ref, rtol):
        for G, R in zip(got, ref):
            for gt, rt in zip(G, R):
                scale = max(1., max(abs(x) for x in rt))
                assert max(abs(a - b) for a, b in zip(gt, rt)) <= rtol*scale, (gt, rt)

    w0 = [w.flatten().tolist() for w in ws]
    refgrads = [[None if gr is None else gr.flatten().tolist() for gr in step] for step in grads]
    one, split = [([0, 1, 2, 3], {})], [([0, 2], {}), ([1, 3], {})]
    for kw in [dict(), dict(momentum=0.9, weight_decay=0.1), dict(momentum=0.9, nesterov=True, maximize=True)]:
        kw = dict(lr=0.05, total_steps=4, **kw)
        for fe in (True, False):
            a, b = run(one, foreach=fe, **kw), run(split, foreach=fe, **kw)
            close(b, a, 1e-13)                                      # the same iterates, to rounding
            close(a, ref_gsgd(w0, refgrads, **kw), 1e-10)
            with pytest.raises(AssertionError): close(run(split, foreach=fe, rescale='group', **kw), a, 1e-6)   # per group: not Eq. 4
    # the weight-decay split (different hyper-parameters per group), per-group factors, and groups whose schedules
    # differ (each group's own exponent e inside one factor): each against the reference
    for groups in [[([0, 2], dict(weight_decay=0.1)), ([1, 3], dict(weight_decay=0., lr=0.02))],
                   [([0, 2], dict(rescale='group')), ([1, 3], dict(rescale='group', momentum=0.))],
                   [([0, 1], dict(total_steps=2)), ([2, 3], dict(total_steps=9))],
                   [([0], dict(rescale='tensor')), ([1, 2], {}), ([3], dict(rescale=None))]]:
        kw = dict(lr=0.05, total_steps=4, momentum=0.9)
        for fe in (True, False): close(run(groups, foreach=fe, **kw), ref_gsgd(w0, refgrads, groups=groups, **kw), 1e-10)
