"""gradual_opt.fastai against whatever fastai is installed: tools/check_install.py runs it in a fresh venv with the
newest fastai 2.8.x (fastcore 2); nbs/06_fastai.ipynb covers the development pin (fastai 2.8.7, fastcore 1).
Not collected by pytest (no test_ prefix): run it as `python tests/fastai_latest_smoke.py`."""
import random, tempfile, warnings
import torch, torch.nn as nn
import fastai, fastcore
with warnings.catch_warnings():
    warnings.filterwarnings('ignore', category=FutureWarning)
    from fastai.data.core import DataLoaders
    from fastai.learner import Learner
    from fastai.callback.core import Callback, CancelFitException
    from fastai.callback.schedule import fit_one_cycle   # patches Learner.fit_one_cycle
from gradual_opt.gsgd import GSGD
from gradual_opt.s3 import S3
from gradual_opt.fastai import fastai_opt, FitSchedule

def data(n=1024, d=8, bs=64, seed=0, shuffle=True):
    "A linear-regression task with a known answer: y = x @ w + small noise; 16 training batches, 4 validation."
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n + n//4, d, generator=g); w = torch.randn(d, 1, generator=g)
    y = x @ w + 0.01*torch.randn(len(x), 1, generator=g)
    ds = list(zip(x, y))
    return DataLoaders.from_dsets(ds[:n], ds[n:], bs=bs, device='cpu', shuffle=shuffle, seed=seed)

def learner(opt_func, seed=0, cbs=(), shuffle=True):
    random.seed(seed); torch.manual_seed(seed)   # fastai's DataLoader shuffles with Python's random
    return Learner(data(seed=seed, shuffle=shuffle), nn.Linear(8, 1), loss_func=nn.MSELoss(), opt_func=opt_func,
                   cbs=[FitSchedule(), *cbs], path=tempfile.mkdtemp())

def mse(learn):
    "Validation MSE computed here, not by fastai."
    learn.model.eval()
    with torch.no_grad(): return torch.stack([nn.functional.mse_loss(learn.model(x), y) for x, y in learn.dls.valid]).mean().item()

def run(name, learn, fit):
    before = mse(learn)
    with learn.no_bar(), learn.no_logging(): fit(learn)
    after, opt = mse(learn), learn.opt.opt
    n, g = len(learn.dls.train), learn.opt.opt.param_groups[0]
    print(f'{name}: {type(opt).__name__}, {n} batches/epoch, total_steps={g.get("total_steps")}, step={int(g["step"])}, '
          f'valid MSE {before:.3f} -> {after:.4f}')
    assert after < 0.1*before, f'{name}: the loss did not fall ({before} -> {after})'
    assert all(torch.isfinite(p).all() for p in learn.model.parameters())
    return opt, n

print(f'fastai {fastai.__version__}, fastcore {fastcore.__version__}, torch {torch.__version__}')
# GSGD under fit: FitSchedule makes the schedule span exactly epochs * batches, and the fit runs it to the end.
opt, n = run('GSGD fit(2)', learner(fastai_opt(GSGD, momentum=0.9)), lambda l: l.fit(2, 0.05))
assert type(opt) is GSGD
assert opt.param_groups[0]['total_steps'] == 2*n and int(opt.param_groups[0]['step']) == 2*n, opt.param_groups[0]
# S3 under fit_one_cycle: fastai schedules lr and mom, and S3's momentum (the paper's beta) is fastai's mom.
class MomentumLog(Callback):   # (a callback named Moms would shadow Learner.moms)
    "The momentum the torch optimizer itself holds after each batch."
    def before_fit(self): self.values = []
    def after_batch(self):
        if self.training: self.values.append(self.learn.opt.opt.param_groups[0]['momentum'])
log = MomentumLog()
opt, n = run('S3 fit_one_cycle(2)', learner(fastai_opt(S3), cbs=[log]), lambda l: l.fit_one_cycle(2, 0.5))
assert type(opt) is S3 and int(opt.param_groups[0]['step']) == 2*n
print(f'S3 momentum over the cycle: {log.values[0]:.3f} -> {min(log.values):.3f} -> {log.values[-1]:.3f}')
assert len(log.values) == 2*n and abs(min(log.values) - 0.85) < 1e-2 and abs(log.values[-1] - 0.95) < 1e-2   # moms=(0.95, 0.85, 0.95)

# Resume: fit(4, start_epoch=2) after save/load continues GSGD's schedule at step 2*n (FitSchedule reads fastai's
# SkipToEpoch) and ends bit for bit where an uninterrupted fit(4) ends (unshuffled batches: fastai does not save
# its loaders' shuffling state).
class StopAfter(Callback):
    def __init__(self, n): self.n = n
    def after_epoch(self):
        if self.epoch + 1 == self.n: raise CancelFitException()
def gsgd(): return learner(fastai_opt(GSGD, momentum=0.9, nesterov=True), shuffle=False)
full, half = gsgd(), gsgd()
with full.no_bar(), full.no_logging(): full.fit(4, 0.05, wd=1e-3)
with half.no_bar(), half.no_logging(): half.fit(4, 0.05, wd=1e-3, cbs=StopAfter(2))
half.save('half', with_opt=True)
resumed = gsgd(); resumed.path = half.path; resumed.load('half', with_opt=True)
n = len(resumed.dls.train)
assert int(resumed.opt.opt.param_groups[0]['step']) == 2*n
with resumed.no_bar(), resumed.no_logging(): resumed.fit(4, 0.05, wd=1e-3, start_epoch=2)
assert int(resumed.opt.opt.param_groups[0]['step']) == 4*n and resumed.opt.opt.param_groups[0]['total_steps'] == 4*n
assert all(torch.equal(a, b) for a, b in zip(full.model.parameters(), resumed.model.parameters())), 'resume differs'
print(f'GSGD save/load/fit(4, start_epoch=2): step {2*n} -> {4*n}, weights equal to the uninterrupted fit(4)')
print('fastai smoke test: ok')
