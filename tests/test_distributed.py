"""GSGD's Eq. 4 when the parameters are sharded over processes: two gloo ranks on the CPU.

* `ZeroRedundancyOptimizer(..., optimizer_class=GSGD, shard_group=True)`: each rank's GSGD holds whole tensors of a
  part of the model, and Eq. 4's sums are all-gathered over the ranks. Equal to one process's GSGD on the whole model;
  without `shard_group` each rank rescales its own part (the negative control: the run differs).
* FSDP2 (`torch.distributed.fsdp.fully_shard`): DTensor parameters sharded on dim 0 (one rank's shard of the last
  layer is empty); GSGD steps on the local shards and sums Eq. 4's norms over the mesh. Equal to one process.

Every rank computes the same full-batch gradient, so a difference can only come from the optimizer. The ranks run in
spawned processes with a deadline: a hang fails the test instead of blocking the suite."""
import datetime, os, socket, traceback
from pathlib import Path
import pytest, torch, torch.nn as nn
import torch.distributed as dist
import torch.multiprocessing as mp

from gradual_opt.gsgd import GSGD

WORLD, STEPS, DEADLINE = 2, 5, 120          # 5 steps with total_steps=4: past the end of the schedule
BASE = dict(lr=0.02, total_steps=4, momentum=0.9)
ZERO = {'global': dict(), 'group': dict(rescale='group'), 'tensor': dict(rescale='tensor'),
        'global, Nesterov, maximize': dict(nesterov=True, maximize=True)}
FSDP = {'global': dict(), 'global, one tensor at a time': dict(foreach=False), 'group': dict(rescale='group'),
        'tensor': dict(rescale='tensor'), 'Algorithm 1': dict(rescale=None), 'global, Nesterov, maximize': dict(nesterov=True, maximize=True)}


def make_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3), nn.Tanh(), nn.Linear(3, 1))   # last layer: 1 row

def param_groups(model, wd=0.05):
    "The split HF Trainer and timm make: matrices with weight decay, biases without."
    ps = list(model.parameters())
    return [{'params': [p for p in ps if p.ndim >= 2], 'weight_decay': wd}, {'params': [p for p in ps if p.ndim < 2], 'weight_decay': 0.}]

def batch(k):
    g = torch.Generator().manual_seed(1000 + k)
    x = torch.randn(32, 6, generator=g)
    return x, torch.tanh(x[:, :1]*2 - x[:, 1:2]) + 0.1*torch.randn(32, 1, generator=g)

def train(model, opt):
    for k in range(STEPS):
        x, y = batch(k)
        opt.zero_grad(); nn.functional.mse_loss(model(x), y).backward(); opt.step()

def single_process(kw):
    model = make_model(); train(model, GSGD(param_groups(model), **BASE, **kw))
    return torch.cat([p.detach().flatten() for p in model.parameters()])

# ---------------------------------------------------------------------------------------------------------------
# the ranks
def zero_run(kw, shard_group=True):
    from torch.distributed.optim import ZeroRedundancyOptimizer
    model = make_model()
    opt = ZeroRedundancyOptimizer(param_groups(model), optimizer_class=GSGD, **BASE, **kw,
                                  **({'shard_group': True} if shard_group else {}))
    train(model, opt)
    held = [sum(p.numel() for g in opt.optim.param_groups for p in g['params'])]   # this rank's part of the model
    return torch.cat([p.detach().flatten() for p in model.parameters()]), held

class LocalOnlyGSGD(GSGD):
    "The negative control: Eq. 4's sums over this rank's shards only (what a sharded GSGD without the all-gather does)."
    def stat_ranks(self): return [], False

def fsdp_run(kw, cls=GSGD):
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.device_mesh import init_device_mesh
    mesh = init_device_mesh('cpu', (WORLD,))
    model = make_model()
    for i in (0, 2, 4): fully_shard(model[i], mesh=mesh)
    fully_shard(model, mesh=mesh)
    opt = cls(param_groups(model), **BASE, **kw)
    train(model, opt)
    return torch.cat([p.full_tensor().detach().flatten() for p in model.parameters()])

def refusals():
    "The layouts GSGD refuses when it is built, with the message each gives."
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import distribute_tensor, Shard
    mesh = init_device_mesh('cpu', (WORLD,))
    dt = lambda: nn.Parameter(distribute_tensor(torch.zeros(4, 2), mesh, [Shard(0)]))
    out = {}
    for name, make in [('mix', lambda: GSGD([dt(), nn.Parameter(torch.zeros(3))], total_steps=3)),
                       ('mix across groups', lambda: GSGD([{'params': [dt()]}, {'params': [nn.Parameter(torch.zeros(3))]}], total_steps=3)),
                       ('shard_group', lambda: GSGD([dt()], total_steps=3, shard_group=True))]:
        try: make(); out[name] = None
        except ValueError as e: out[name] = str(e)
    return out

def worker(rank, port, out_dir):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    torch.set_num_threads(1)
    out = Path(out_dir)
    try:
        dist.init_process_group('gloo', rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=60))
        res = {('zero', n): zero_run(kw) for n, kw in ZERO.items()}
        res['zero', 'global without shard_group'] = zero_run({}, shard_group=False)
        for n, kw in FSDP.items(): res['fsdp', n] = fsdp_run(kw)
        res['fsdp', 'global, local sums only'] = fsdp_run({}, LocalOnlyGSGD)
        res['refusals'] = refusals()
        torch.save(res, out/f'rank{rank}.pt')
        dist.barrier(); dist.destroy_process_group()
    except BaseException:
        (out/f'rank{rank}.err').write_text(traceback.format_exc())
        os._exit(1)
    os._exit(0)     # skip the interpreter's teardown, where gloo's threads can abort a finished rank

def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

@pytest.fixture(scope='module')
def ranks(tmp_path_factory):
    "Run both ranks once for every test of this file; fail (never hang) if they do not finish within DEADLINE seconds."
    if not dist.is_available() or not dist.is_gloo_available(): pytest.skip('torch.distributed with gloo is not available')
    out = tmp_path_factory.mktemp('dist')
    ctx = mp.start_processes(worker, args=(free_port(), str(out)), nprocs=WORLD, join=False, start_method='spawn')
    deadline = datetime.datetime.now() + datetime.timedelta(seconds=DEADLINE)
    try:
        while not ctx.join(timeout=1):
            if datetime.datetime.now() > deadline: pytest.fail(f'the ranks did not finish within {DEADLINE} s')
    except mp.ProcessRaisedException as e: pytest.fail(str(e))
    except mp.ProcessExitedException as e:
        errs = [f.read_text() for f in sorted(out.glob('rank*.err'))]
        pytest.fail(f'{e}\n' + '\n'.join(errs))
    finally:
        for p in ctx.processes:
            if p.is_alive(): p.kill()
    return [torch.load(out/f'rank{r}.pt') for r in range(WORLD)]

# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('name', list(ZERO))
def test_zero_redundancy_equals_one_process(ranks, name):
    (r0, held0), (r1, held1) = ranks[0]['zero', name], ranks[1]['zero', name]
    assert held0[0] > 0 and held1[0] > 0 and held0[0] + held1[0] == r0.numel()   # each rank holds a part
    assert torch.equal(r0, r1)
    diff = (r0 - single_process(ZERO[name])).abs().max().item()
    assert diff <= 1e-6, diff

def test_zero_without_shard_group_differs(ranks):
    "The negative control: each rank's GSGD rescales its own part of the model, which is not Eq. 4."
    r0, _ = ranks[0]['zero', 'global without shard_group']
    assert (r0 - single_process({})).abs().max().item() > 1e-4

@pytest.mark.parametrize('name', list(FSDP))
def test_fsdp2_equals_one_process(ranks, name):
    r0, r1 = ranks[0]['fsdp', name], ranks[1]['fsdp', name]
    assert torch.equal(r0, r1)
    diff = (r0 - single_process(FSDP[name])).abs().max().item()
    assert diff <= 1e-6, diff

def test_fsdp2_without_the_mesh_sum_differs(ranks):
    "The negative control: Eq. 4's sums over each rank's shards alone."
    assert (ranks[0]['fsdp', 'global, local sums only'] - single_process({})).abs().max().item() > 1e-4

def test_refused_layouts(ranks):
    "Plain and DTensor parameters together (their sums cannot be combined), or a shard_group with DTensors (counted twice)."
    r = ranks[0]['refusals']
    assert 'mix of DTensor and plain' in r['mix'] and 'mix of DTensor and plain' in r['mix across groups']
    assert 'leave shard_group None' in r['shard_group']
