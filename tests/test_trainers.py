"Every trainer, running the real library: Hugging Face Trainer, PyTorch Lightning, torch's cyclic LR schedulers, timm's factory."
import contextlib, math, warnings, logging
import pytest
import torch, torch.nn as nn
from gradual_opt.registry import registry
from gradual_opt.gsgd import GSGD
from gradual_opt.lpsgd import LPSGD
from gradual_opt.s3 import S3

ENTRIES = registry('optimizer')

def same_weights(m1, m2): return all(torch.equal(a, b) for a, b in zip(m1.parameters(), m2.parameters()))

def regression(n=64, seed=0):
    "64 synthetic examples: 8 features, a noisy linear target."
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    return x, x @ torch.randn(8, 1, generator=g) + 0.1*torch.randn(n, 1, generator=g)

def mlp(): return nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 1))

# ---------------------------------------------------------------- Hugging Face Trainer

class _HFData(torch.utils.data.Dataset):
    def __init__(self): self.x, self.y = regression()
    def __len__(self): return len(self.x)
    def __getitem__(self, i): return {'x': self.x[i], 'labels': self.y[i]}

class _HFModel(nn.Module):
    def __init__(self):
        super().__init__(); self.net = mlp()
    def forward(self, x, labels=None):
        out = self.net(x)
        return {'loss': nn.functional.mse_loss(out, labels), 'logits': out}

def hf_trainer(out_dir, opt_cls_kw=None, optimizers=None, model=None, callbacks='schedule', **kw):
    "A Trainer on the CPU: 3 epochs of 8 batches (unless `kw` says otherwise), a checkpoint every 10 steps."
    transformers = pytest.importorskip('transformers')
    from gradual_opt.hf import HFSchedule
    torch.manual_seed(0)
    kw = dict(dict(per_device_train_batch_size=8, num_train_epochs=3, save_strategy='steps', save_steps=10), **kw)
    args = transformers.TrainingArguments(out_dir, use_cpu=True, report_to='none', disable_tqdm=True, logging_strategy='no',
                                          weight_decay=0.01, seed=0, **kw)
    cbs = [HFSchedule()] if callbacks == 'schedule' else list(callbacks)
    tr = transformers.Trainer(model or _HFModel(), args, train_dataset=_HFData(), callbacks=cbs,
                              **(dict(optimizer_cls_and_kwargs=opt_cls_kw) if opt_cls_kw else dict(optimizers=optimizers)))
    tr.remove_callback(transformers.PrinterCallback)
    return tr

@pytest.mark.parametrize('opt_cls_kw', [(GSGD, dict(lr=0.05, momentum=0.9)), (S3, dict(lr=0.01))], ids=['GSGD', 'S3'])
def test_hf_trains_and_resumes_bit_exact(opt_cls_kw, tmp_path):
    full = hf_trainer(str(tmp_path/'full'), opt_cls_kw); full.train()
    opt = full.optimizer.optimizer                                   # inside accelerate's AcceleratedOptimizer
    assert type(opt) is opt_cls_kw[0] and len(opt.param_groups) == 2   # the Trainer's weight-decay split
    if opt.scheduled:
        assert full.state.max_steps == 24
        assert [g['total_steps'] for g in opt.param_groups] == [24, 24]   # HFSchedule: total_steps = state.max_steps
        assert [int(g['step']) for g in opt.param_groups] == [24, 24]
    else: assert all(len(opt.state[p]) >= 3 for p in full.model.parameters())   # S3: step, two buffers, running max
    resumed = hf_trainer(str(tmp_path/'resumed'), opt_cls_kw)
    resumed.train(resume_from_checkpoint=str(tmp_path/'full'/'checkpoint-10'))   # mid-epoch 2
    assert same_weights(full.model, resumed.model)
    if opt.scheduled:   # the check can fail: restarting the count on resume changes the result
        from transformers import TrainerCallback
        class Restart(TrainerCallback):
            def on_train_begin(self, args, state, control, optimizer=None, **kw): optimizer.optimizer.set_schedule(total_steps=state.max_steps, step=0)
        wrong = hf_trainer(str(tmp_path/'wrong'), opt_cls_kw, callbacks=[Restart()])
        wrong.train(resume_from_checkpoint=str(tmp_path/'full'/'checkpoint-10'))
        assert not same_weights(full.model, wrong.model)

def test_hf_schedule_with_accumulation_and_an_instance(tmp_path):
    "HFSchedule sizes an optimizer passed as an instance, counts updates (not batches) under gradient accumulation, and sets LPSGD's steps_per_epoch."
    model = _HFModel()
    opt = LPSGD(model.parameters(), lr=0.05, p_max=6)
    tr = hf_trainer(str(tmp_path), optimizers=(opt, None), model=model, gradient_accumulation_steps=3, save_strategy='no')
    tr.train()
    assert tr.state.max_steps == 9                                    # 3 epochs x ceil(8 batches / 3)
    assert opt.param_groups[0]['total_steps'] == 9 and opt.param_groups[0]['steps_per_epoch'] == 3
    assert int(opt.param_groups[0]['step']) == 9

def test_hf_schedule_reaches_gradient_transforms(tmp_path):
    "A torch optimizer behind AGR(until=...) has no schedule of its own; HFSchedule sizes the transform's."
    from gradual_opt.transforms import with_transforms, AGR
    model = _HFModel()
    opt = with_transforms(torch.optim.AdamW, AGR(until=0.5))(model.parameters(), lr=1e-2)
    hf_trainer(str(tmp_path), optimizers=(opt, None), model=model, max_steps=6, save_strategy='no').train()
    agr_ = opt.grad_transforms[0]
    assert agr_.total_steps == 6 and int(agr_.step) == 6

def test_hf_without_schedule_stops_before_moving(tmp_path):
    tr = hf_trainer(str(tmp_path), (GSGD, dict(lr=0.05)), callbacks=[], save_strategy='no')
    w0 = [p.detach().clone() for p in tr.model.parameters()]
    with pytest.raises(RuntimeError, match='total_steps is not set'): tr.train()
    assert all(torch.equal(a, b) for a, b in zip(w0, tr.model.parameters())) and tr.state.global_step == 0

def test_missing_total_steps_names_the_trainer_callbacks():
    "What a user without a callback reads: it must point HF and Lightning users to theirs, not only fastai's."
    p = nn.Parameter(torch.ones(3)); p.grad = torch.ones(3)
    with pytest.raises(RuntimeError) as e: GSGD([p], lr=0.1).step()
    for name in ('FitSchedule', 'HFSchedule', 'LightningSchedule'): assert name in str(e.value), str(e.value)

# ---------------------------------------------------------------- PyTorch Lightning

@contextlib.contextmanager
def quiet_lightning():
    "Lightning's notes on a toy CPU run (few data workers, a checkpoint directory that moved, a deprecation of its own)."
    with warnings.catch_warnings():
        for msg in ('does not have many workers', 'The dirpath has changed', 'isinstance.treespec, LeafSpec'):
            warnings.filterwarnings('ignore', message=f'.*{msg}')
        yield

def pl_fit(ckpt_dir, opt_cls, hyper, ckpt_path=None, callbacks='schedule', max_epochs=3, **kw):
    "Fit a fresh module (seed 0) on the CPU, unshuffled batches of 8, a checkpoint per epoch; returns trainer and module."
    pl = pytest.importorskip('lightning.pytorch')
    from gradual_opt.lightning import LightningSchedule
    logging.getLogger('lightning.pytorch').setLevel(logging.ERROR)
    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__(); self.net = mlp()
        def training_step(self, batch, i): return nn.functional.mse_loss(self.net(batch[0]), batch[1])
        def configure_optimizers(self): return opt_cls(self.parameters(), **hyper)
        def train_dataloader(self): return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*regression()), batch_size=8)
    torch.manual_seed(0); module = Module()
    cbs = [LightningSchedule()] if callbacks == 'schedule' else list(callbacks)
    if kw.get('enable_checkpointing', True):
        cbs.append(pl.callbacks.ModelCheckpoint(dirpath=ckpt_dir, filename='{epoch}', every_n_epochs=1, save_top_k=-1))
    trainer = pl.Trainer(max_epochs=max_epochs, accelerator='cpu', devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=cbs, default_root_dir=ckpt_dir, **kw)
    with quiet_lightning(): trainer.fit(module, ckpt_path=ckpt_path)
    return trainer, module

@pytest.mark.parametrize('opt_cls, hyper', [(GSGD, dict(lr=0.05, momentum=0.9)), (S3, dict(lr=0.01))], ids=['GSGD', 'S3'])
def test_lightning_fits_and_resumes_bit_exact(opt_cls, hyper, tmp_path):
    trainer, full = pl_fit(tmp_path/'full', opt_cls, hyper)
    opt = trainer.optimizers[0]
    assert type(opt) is opt_cls and trainer.estimated_stepping_batches == 24
    if opt.scheduled: assert opt.param_groups[0]['total_steps'] == 24 and int(opt.param_groups[0]['step']) == 24
    trainer2, resumed = pl_fit(tmp_path/'resumed', opt_cls, hyper, ckpt_path=tmp_path/'full'/'epoch=0.ckpt')
    assert int(trainer2.optimizers[0].param_groups[0]['step']) == 24
    assert same_weights(full, resumed)
    if opt.scheduled:   # the check can fail: restarting the count on resume changes the result
        import lightning.pytorch as pl
        class Restart(pl.Callback):
            def on_train_start(self, trainer, module): trainer.optimizers[0].set_schedule(total_steps=24, step=0)
        _, wrong = pl_fit(tmp_path/'wrong', opt_cls, hyper, ckpt_path=tmp_path/'full'/'epoch=0.ckpt', callbacks=[Restart()])
        assert not same_weights(full, wrong)
        trainer3, _ = pl_fit(tmp_path/'longer', opt_cls, hyper, ckpt_path=tmp_path/'full'/'epoch=0.ckpt', max_epochs=5)
        assert trainer3.optimizers[0].param_groups[0]['total_steps'] == 40   # the resumed fit's length, not the checkpoint's
        assert int(trainer3.optimizers[0].param_groups[0]['step']) == 40

def test_lightning_schedule_with_accumulation(tmp_path):
    trainer, _ = pl_fit(tmp_path, LPSGD, dict(lr=0.05, p_max=6), accumulate_grad_batches=3, enable_checkpointing=False)
    g = trainer.optimizers[0].param_groups[0]
    assert trainer.estimated_stepping_batches == 9 and g['total_steps'] == 9 and g['steps_per_epoch'] == 3 and int(g['step']) == 9

def test_lightning_without_schedule_stops_before_moving(tmp_path):
    pl = pytest.importorskip('lightning.pytorch')
    seen = {}
    class Snapshot(pl.Callback):
        def on_train_start(self, trainer, module): seen.update(module=module, w0=[p.detach().clone() for p in module.parameters()])
    with pytest.raises(RuntimeError, match='total_steps is not set'):
        pl_fit(tmp_path, GSGD, dict(lr=0.05), callbacks=[Snapshot()], enable_checkpointing=False)
    assert all(torch.equal(a, b) for a, b in zip(seen['w0'], seen['module'].parameters()))

def test_lightning_schedule_refuses_a_fit_of_unknown_length(tmp_path):
    "An iterable data set with no max_steps: no length to give the schedule, said at the start of the fit."
    pl = pytest.importorskip('lightning.pytorch')
    from gradual_opt.lightning import LightningSchedule
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self): return iter(zip(*regression()))
    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__(); self.net = mlp()
        def training_step(self, batch, i): return nn.functional.mse_loss(self.net(batch[0]), batch[1])
        def configure_optimizers(self): return GSGD(self.parameters(), lr=0.05)
        def train_dataloader(self): return torch.utils.data.DataLoader(Stream(), batch_size=8)
    trainer = pl.Trainer(max_epochs=1, accelerator='cpu', devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, callbacks=[LightningSchedule()])
    with quiet_lightning():
        with pytest.raises(ValueError, match='length of this fit is unknown'): trainer.fit(Module())

# ---------------------------------------------------------------- torch's cyclic schedulers

SCHEDULERS = {
    'OneCycleLR': lambda opt, lr: torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=6, cycle_momentum=True),
    'CyclicLR': lambda opt, lr: torch.optim.lr_scheduler.CyclicLR(opt, base_lr=lr/10, max_lr=lr, step_size_up=2, cycle_momentum=True),
}

def _scheduled_run(model, opt, make_sched, lr, n=6):
    "n steps of a regression under the scheduler; returns the losses and each step's (lr, momentum or betas) of group 0."
    torch.manual_seed(1); x, y = torch.randn(32, 8), torch.randn(32, 1)
    sched, out, losses = make_sched(opt, lr), [], []
    for _ in range(n):
        opt.zero_grad(); loss = nn.functional.mse_loss(model(x), y); loss.backward(); opt.step(); sched.step()
        losses.append(loss.item()); g = opt.param_groups[0]
        out.append((g['lr'], g['betas'] if 'betas' in g else g['momentum']))
    return losses, out

def _with_model(make_opt):
    torch.manual_seed(0); model = mlp()
    return model, make_opt(model.parameters())

@pytest.mark.parametrize('sched', list(SCHEDULERS))
@pytest.mark.parametrize('entry', ENTRIES, ids=[e.name for e in ENTRIES])
def test_cyclic_schedulers_cycle_momentum(entry, sched):
    kw = dict(entry.test_kwargs); lr = kw.pop('lr')
    model, opt = _with_model(lambda ps: entry.cls(ps, lr=lr, **kw))
    betas = 'betas' in opt.defaults
    # torch's own optimizer with the same kind of coefficient is the reference for what the scheduler sets
    ref_model, ref = _with_model(lambda ps: torch.optim.Adam(ps, lr=lr) if betas else torch.optim.SGD(ps, lr=lr, momentum=0.))
    losses, got = _scheduled_run(model, opt, SCHEDULERS[sched], lr)
    _, want = _scheduled_run(ref_model, ref, SCHEDULERS[sched], lr)
    assert all(math.isfinite(l) for l in losses) and all(torch.isfinite(p).all() for p in model.parameters())
    assert [l for l, _ in got] == [l for l, _ in want]
    moms = [m[0] if betas else m for _, m in got]
    assert moms == [m[0] if betas else m for _, m in want] and len(set(moms)) >= 2, moms   # the coefficient cycles
    if betas: assert all(tuple(b[1:]) == tuple(opt.defaults['betas'][1:]) for _, b in got)   # the others keep their value
    if not betas and entry.cls in (GSGD, LPSGD) and kw.get('momentum', 0) == 0:
        # torch's SGD(momentum=0) under a momentum-cycling scheduler becomes heavy-ball SGD with a buffer; ours too
        assert all('momentum_buffer' in ref.state[p] for p in ref_model.parameters())
        assert all('momentum_buffer' in opt.state[p] for p in model.parameters())

# ---------------------------------------------------------------- timm

def _timm():
    optim = pytest.importorskip('timm.optim')
    factory = pytest.importorskip('gradual_opt.factory')
    if not hasattr(factory, 'register_timm'): pytest.skip('gradual_opt.factory.register_timm not written yet')
    return optim, factory

def test_timm_registration_builds_every_entry():
    optim, factory = _timm()
    factory.register_timm()
    names = set(optim.list_optimizers())
    assert {e.name.lower() for e in ENTRIES} <= names
    model = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 1))
    no_decay = {id(p) for p in model.parameters() if p.ndim <= 1}          # timm's rule: biases and norm weights
    for e in ENTRIES:
        if e.name.lower() in ('lion', 'adan'): continue                   # timm's own names (see the next test)
        extra = dict(total_steps=6) if e.cls.scheduled else {}
        opt = optim.create_optimizer_v2(model, e.name.lower(), lr=0.01, weight_decay=0.05, **extra)
        assert type(opt) is e.cls, e.name
        split = {g['weight_decay']: {id(p) for p in g['params']} for g in opt.param_groups}
        assert split == {0.: no_decay, 0.05: {id(p) for p in model.parameters()} - no_decay}, e.name
        model.zero_grad(); model(torch.randn(4, 8)).square().mean().backward(); opt.step()
        w = model[0].weight
        assert sum(torch.is_tensor(v) and v.shape == w.shape for v in opt.state[w].values()) == e.buffers, e.name

def test_timm_keeps_its_own_optimizers():
    "Registering ours must not replace what timm already calls 'lion' or 'adan' for everyone else in the process."
    optim, factory = _timm()
    import timm.optim
    factory.register_timm()
    assert optim.get_optimizer_class('lion', bind_defaults=False) is timm.optim.Lion
    assert optim.get_optimizer_class('adan', bind_defaults=False) is timm.optim.Adan

def test_timm_momentum_argument():
    "timm passes its `momentum` (0.9 unless given) to optimizers that declare one: the momentum entries take it, the plain ones stay plain."
    optim, factory = _timm()
    factory.register_timm()
    model = mlp()
    for name, given, want in [('gsgd-momentum', 0.5, 0.5), ('gsgd-momentum', None, 0.9), ('lpsgdm', 0.5, 0.5),
                              ('s3', 0.5, 0.5), ('gsgd', 0.5, 0.), ('lpsgd', 0.5, 0.)]:
        kw = {} if given is None else dict(momentum=given)
        extra = dict(total_steps=6) if name != 's3' else {}
        opt = optim.create_optimizer_v2(model, name, lr=0.01, **kw, **extra)
        assert [g['momentum'] for g in opt.param_groups] == [want]*len(opt.param_groups), (name, given)
