"""Test helpers shared by the test files: runs of an optimizer or a transform on awkward tensors, and path comparisons.

The two paths are foreach batches (`foreach=True`: cache-sized batches of flat views, `93_plumbing`) and one tensor at a
time (`foreach=False`). The code is the same; only where pieces are cut, and so the rounding of per-piece statistics,
differs. In fp64 and fp32 the paths agree to rounding; in bf16 two correct runs can differ by many ulps, so each is held
against the fp64 run of the same problem (`check_paths`).
"""
import copy
from dataclasses import dataclass
import torch
from fastcore.test import test_close

F64, F32, BF16 = torch.float64, torch.float32, torch.bfloat16


@dataclass(frozen=True)
class Problem:
    "A fixed set of parameter shapes and gradients: the awkward cases a path has to get right."
    shapes: tuple                 # contiguous parameters (0-d, one element, empty, larger than one batch)
    transposed: tuple             # one more parameter of this shape, transposed: non-contiguous
    missing: int                  # this parameter has no gradient at steps t with t % 3 == 1
    shift: int                    # gradient i is scaled by 10**(i % 4 - shift)
    nc_grad: bool = False         # the last parameter's gradient is non-contiguous too

# the shapes of 02_gsgd and 04_s3; those of 03_lpsgd (which also gives the transposed parameter a transposed gradient)
MIXED = Problem(((), (1,), (7,), (0,), (33, 5), (3, 4, 5), (5000,), (70, 90)), (40, 30), missing=2, shift=2)
LP = Problem(((3000,), (40, 70), (), (1,), (0, 5), (1, 1), (17, 3)), (30, 20), missing=3, shift=3, nc_grad=True)


def paths_run(cls, kw, dtype, foreach, steps=6, seed=0, scale=1.0, switch_at=None, problem=MIXED):
    "Parameters (fp64) after `steps` steps of `cls(ps, foreach=foreach, **kw)` on `problem`; `switch_at` flips the path"
    g = torch.Generator().manual_seed(seed)
    randn = lambda *s: torch.randn(*s, generator=g, dtype=F64)
    ps = [torch.nn.Parameter(randn(s).to(dtype)) for s in problem.shapes]
    ps.append(torch.nn.Parameter(randn(problem.transposed).to(dtype).t()))
    opt = cls(ps, foreach=foreach, **kw)
    for t in range(steps):
        if t == switch_at:
            for group in opt.param_groups: group['foreach'] = not foreach
        for i, p in enumerate(ps):
            p.grad = None if (i == problem.missing and t % 3 == 1) else (
                randn(p.shape)*10.0**(i % 4 - problem.shift)*scale).to(dtype)
            if problem.nc_grad and i == len(ps) - 1 and p.grad is not None: p.grad = p.grad.t().contiguous().t()
        opt.step()
    return [p.detach().double() for p in ps]


def check_close_paths(single, batched, dtype, rtol, finite=False, floor=1.):
    "fp64/fp32: each batched tensor within `rtol[dtype]` of the one-tensor one, relative to max(floor, its max)"
    for a, b in zip(single, batched):
        if a.numel(): test_close(b, a, eps=rtol[dtype]*max(floor, a.abs().max().item()))
        if finite: assert torch.isfinite(b).all()


def check_bf16_paths(single, batched, ref, slack, ulp_of_batched=False):
    "bf16: batched at most twice as far from the fp64 run `ref` as one-tensor, plus `slack` ulps of the largest entry"
    for a, b, r in zip(single, batched, ref):
        if r.numel() == 0: continue
        top = max(r.abs().max().item(), b.abs().max().item()) if ulp_of_batched else r.abs().max().item()
        ulp = 2**-7*top                                    # one bf16 ulp at the tensor's largest entry
        assert (b - r).abs().max() <= 2*(a - r).abs().max() + slack*ulp, ((b - r).abs().max(), (a - r).abs().max())


def check_paths(cls, kw, dtypes=(F64, F32, BF16), rtol=None, finite=False, **run_kw):
    "Foreach batches and one tensor at a time give the same iterates (bf16: equally close to the fp64 run)."
    rtol = rtol or {F64: 1e-10, F32: 1e-5}
    for dt in dtypes:
        single, batched = paths_run(cls, kw, dt, False, **run_kw), paths_run(cls, kw, dt, True, **run_kw)
        if dt == BF16:                                     # each step rounds the parameter: half an ulp per step
            check_bf16_paths(single, batched, paths_run(cls, kw, F64, False, **run_kw), run_kw.get('steps', 6)/2)
        else: check_close_paths(single, batched, dt, rtol, finite)


def tf_grads(dtype, seed, scale=1.):
    "Gradients of awkward shapes (the last one non-contiguous), as `dtype`, with per-tensor means and spreads"
    g = torch.Generator().manual_seed(seed)
    shapes = [(40, 70), (3000,), (1, 1), (0, 5), (17, 3), (200, 4, 3), (), (1,)]
    gs = [((torch.randn(s, generator=g, dtype=F64) + 0.3*i - 1)*10.0**(i % 3 - 1)*scale).to(dtype)
          for i, s in enumerate(shapes)]
    gs.append((torch.randn(20, 30, generator=g, dtype=F64)*scale).to(dtype).t())    # non-contiguous
    return gs


def tf_apply(tfm, gs):
    "Apply a fresh deep copy of `tfm` to parameters holding copies of `gs`; the new gradients (fp64) and the transform."
    ps = [torch.nn.Parameter(torch.zeros(g.shape, dtype=g.dtype)) for g in gs]
    for p, g in zip(ps, gs): p.grad = g.clone() if g.is_contiguous() else g.t().clone().t()
    t = copy.deepcopy(tfm); t(ps)
    return [p.grad.double() for p in ps], t
