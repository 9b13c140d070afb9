"""Per-element reference implementations of every optimizer and gradient transform in `gradual_opt`.

Plain Python floats and loops (the `math` module only, no torch), written from the papers in shared/papers/ and the
algorithms' published code, so that the library can be tested against something simple and obviously correct.

Conventions shared by every function below:

* A tensor is a flat list of floats (row-major when a shape matters); `ws` is a list of tensors.
* `grads` is a list over steps; each step is a list over tensors of flat gradient lists (given, not computed).
  A tensor's gradient may be `None` at a step: that tensor is skipped at that step, as torch skips a parameter whose
  `.grad` is None (no decay, no state update, no step counted for it).
* Optimizers return the list over steps of the parameters after each step (list over tensors of flat lists).
* torch's conventions: `maximize` negates the gradient; decoupled weight decay p <- p*(1 - lr*wd) is applied
  before the update unless a docstring says otherwise; sign(0) = 0.
* One parameter group (unless a docstring says otherwise); steps count from t = 1.
"""
import math

__all__ = ['ref_gsgd', 'ref_gadam', 'ref_lpsgd', 'ref_s3', 'ref_lion', 'ref_adan', 'ref_agradamw', 'ref_sgd',
           'ref_agr', 'ref_centralize', 'ref_autoscale', 'ref_autoscale_steps', 'ref_lpsgd_p', 'ref_psi']


def _sign(x):
    "sign(x) with sign(0) = 0, as torch.sign."
    return 1.0 if x > 0 else -1.0 if x < 0 else 0.0

def _copy(ws):
    return [[float(x) for x in w] for w in ws]

def _g(g, maximize):
    "The gradient the update sees (negated when maximizing); None stays None."
    if g is None: return None
    return [-float(x) for x in g] if maximize else [float(x) for x in g]

def _decay(w, lr, wd):
    "Decoupled weight decay, p <- p*(1 - lr*wd), in place."
    if wd != 0:
        for i in range(len(w)): w[i] = w[i]*(1 - lr*wd)


# ---------------------------------------------------------------------------------------------------------------
# GSGD and Gradual Adam (Yuan, Liu & Nie, shared/papers/gsgd_gradual_sgd.txt)

def ref_gsgd(ws, grads, lr, total_steps, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0,
             rescale='global', maximize=False, groups=None, exponent=None):
    """Gradual SGD, Algorithm 1 (line 4: sign(g)|g|^((t-1)/N)) with the l2 rescale of Eq. 4.

    Exponent e = min(1, (t-1)/N), held at 1 (SGD) past the end. The direction d is the gradient or torch SGD's
    momentum form (first step buf = g; then buf = mom*buf + (1-damp)*g; Nesterov d = g + mom*buf, else d = buf),
    as Sec. 2.2 says momentum and Nesterov enter "exactly the same way as in standard SGD".
    s = sign(d)|d|^e (so e = 0 is signSGD). Eq. 4's factor f = ||d||_2/||s||_2 (f = 0 where ||s|| = 0), the sums
    taken over: 'global', every entry of every tensor with a gradient in every group whose rescale is 'global'
    (Eq. 4's g_t is the whole gradient); 'group', the tensors of one param group; 'tensor', one tensor; None: f = 1
    (Algorithm 1 as printed). Update: p <- p(1 - lr*wd) - lr*f*s.

    `groups`: param groups as a list of (tensor indices, {hyper-parameter: value}); a group's values (lr,
    total_steps, momentum, dampening, nesterov, weight_decay, rescale, maximize) replace the arguments for its
    tensors. None: one group of every tensor. Each group's s uses its own exponent e (its own total_steps); a
    'global' factor is then ||d||/||s|| of the whole vector, each piece of s with its group's e.
    `exponent(t, N)`: another schedule of e (None: the paper's min(1, (t-1)/N)).
    """
    base = dict(lr=lr, total_steps=total_steps, momentum=momentum, dampening=dampening, nesterov=nesterov,
                weight_decay=weight_decay, rescale=rescale, maximize=maximize)
    groups = [(list(range(len(ws))), {})] if groups is None else groups
    hyper = {j: {**base, **over} for idx, over in groups for j in idx}     # tensor index -> its group's hyper-parameters
    group_of = {j: k for k, (idx, _) in enumerate(groups) for j in idx}
    ws, bufs, out = _copy(ws), [None]*len(ws), []
    for t, step in enumerate(grads, 1):
        ds, ss = {}, {}                                    # tensor index -> direction d, and s = sign(d)|d|^e
        for j, g in enumerate(step):
            h = hyper[j]
            g = _g(g, h['maximize'])
            if g is None: continue
            mom = h['momentum']
            if mom != 0:
                if bufs[j] is None: bufs[j] = list(g)
                else: bufs[j] = [mom*b + (1 - h['dampening'])*x for b, x in zip(bufs[j], g)]
                d = [x + mom*b for x, b in zip(g, bufs[j])] if h['nesterov'] else list(bufs[j])
            else: d = g
            e = min(1.0, (t - 1)/h['total_steps']) if exponent is None else exponent(t, h['total_steps'])
            ds[j], ss[j] = d, [_sign(x) if e == 0 else _sign(x)*abs(x)**e for x in d]
        def domain(j):
            r = hyper[j]['rescale']
            if r not in ('global', 'group', 'tensor', None): raise ValueError(r)
            return r if r in ('global', None) else ('group', group_of[j]) if r == 'group' else ('tensor', j)
        sq = lambda vs, dom: sum(x*x for j in vs if domain(j) == dom for x in vs[j])
        for j in ds:
            dom = domain(j)
            if dom is None: f = 1.0
            else:
                dd, sss = sq(ds, dom), sq(ss, dom)
                f = math.sqrt(dd/sss) if sss > 0 else 0.0
            h = hyper[j]
            _decay(ws[j], h['lr'], h['weight_decay'])
            ws[j] = [w - h['lr']*f*s for w, s in zip(ws[j], ss[j])]
        out.append(_copy(ws))
    return out


def ref_gadam(ws, grads, lr, total_steps, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, maximize=False):
    """Gradual Adam, Algorithm 2: Adam whose power q on v_hat decays from 1/2 to 0, q = 0.5*max(0, 1-(t-1)/N).

    m = b1*m + (1-b1)g, v = b2*v + (1-b2)g^2 (from 0); bias corrections use each tensor's own step count k;
    p <- p(1 - lr*wd) - lr*(m/(1-b1^k)) / ((v/(1-b2^k))^q + eps). v^0 = 1 (also for v = 0), so at q = 0 the step is
    lr*m_hat/(1 + eps). A 0/0 (eps = 0 and v = 0, hence m = 0) gives 0, as the library's tiny-eps floor does.
    The decoupled decay is the library's choice (the paper's Algorithm 2 has none).
    """
    b1, b2 = betas
    ws, out = _copy(ws), []
    ms, vs, ks = [[0.0]*len(w) for w in ws], [[0.0]*len(w) for w in ws], [0]*len(ws)
    for t, step in enumerate(grads, 1):
        q = 0.5*max(0.0, 1 - (t - 1)/total_steps)
        for j, g in enumerate(step):
            g = _g(g, maximize)
            if g is None: continue
            ks[j] += 1; k = ks[j]
            _decay(ws[j], lr, weight_decay)
            for i, x in enumerate(g):
                ms[j][i] = b1*ms[j][i] + (1 - b1)*x
                vs[j][i] = b2*vs[j][i] + (1 - b2)*x*x
                mh, vh = ms[j][i]/(1 - b1**k), vs[j][i]/(1 - b2**k)
                den = vh**q + eps                          # Python: 0.0**0 == 1.0
                ws[j][i] -= lr*mh/den if den > 0 else 0.0
        out.append(_copy(ws))
    return out


# ---------------------------------------------------------------------------------------------------------------
# LPSGD (Xu & Yang, shared/papers/lpsgd_cosine_lp_norm.txt)

def ref_lpsgd_p(t, total_steps, p_max=6.0, steps_per_epoch=None):
    """Eq. 19: p_s = 2 + (p_max-2)(1 + cos(pi (s-1)/(S-1)))/2, held at 2 past S.

    With `steps_per_epoch` (Eq. 19 as written, per epoch): s = (t-1)//spe + 1, S = ceil(N/spe); else s = t, S = N.
    S = 1: p_max at s = 1, then 2.
    """
    if steps_per_epoch is None: s, S = t, total_steps
    else: s, S = (t - 1)//steps_per_epoch + 1, math.ceil(total_steps/steps_per_epoch)
    if S == 1: return float(p_max) if s == 1 else 2.0
    x = min(1.0, (s - 1)/(S - 1))
    return 2 + (p_max - 2)*(1 + math.cos(math.pi*x))/2


def ref_lpsgd(ws, grads, lr, total_steps, p_max=6.0, momentum=0.0, weight_decay=0.0, eps=1e-8, steps_per_epoch=None,
              maximize=False):
    """LPSGD (Algorithm 1, Eqs. 19-22) and LPSGDM (Algorithm 2, Eqs. 23-25).

    p from Eq. 19 (`ref_lpsgd_p`), rho = (p-2)/(p-1) (Eq. 20); m = beta*m + (1-beta)*g from m = 0 when
    momentum = beta > 0 (Eq. 23), else m = g; u = m/(|m| + eps)^rho (Eqs. 21/24); p <- (1 - lr*wd)p - lr*u (Eq. 25).
    m = 0 gives u = 0 (also with eps = 0, where the library floors eps at the dtype's tiny).
    """
    ws, out = _copy(ws), []
    ms = [[0.0]*len(w) for w in ws]
    for t, step in enumerate(grads, 1):
        p = ref_lpsgd_p(t, total_steps, p_max, steps_per_epoch)
        rho = (p - 2)/(p - 1)
        for j, g in enumerate(step):
            g = _g(g, maximize)
            if g is None: continue
            _decay(ws[j], lr, weight_decay)
            for i, x in enumerate(g):
                if momentum != 0: ms[j][i] = momentum*ms[j][i] + (1 - momentum)*x; m = ms[j][i]
                else: m = x
                u = 0.0 if m == 0 else m/(abs(m) + eps)**rho
                ws[j][i] -= lr*u
        out.append(_copy(ws))
    return out


# ---------------------------------------------------------------------------------------------------------------
# S3, SoftSignSGD (shared/papers/s3_softsignsgd.txt)

def ref_s3(ws, grads, lr, beta1=0.95, beta2=None, p=3, weight_decay=0.0, nesterov=True, eps=0.0, maximize=False):
    """S3, Algorithm 1 (lines 4-7), with the untied beta1 != beta2 of Theorem 2 / the ablations (Tables III, IV).

    m = b1*m + (1-b1)g; s = b2*s + (1-b2)|g|^p (m = s = 0 at the start, no bias correction).
    Nesterov (NAG II, line 6): n = b1*m + (1-b1)g, b = (b2*s + (1-b2)|g|^p)^(1/p); without: n = m, b = s^(1/p)
    (the "w/o NAG" ablation). Update p <- p(1 - lr*wd) - lr*n/(b + eps), 0 where b + eps = 0 (then n = 0 too).
    beta2=None ties beta2 = beta1 (the paper's S3: |n/b| <= 1 by Hoelder, Theorem 2(2)).

    `eps` here is an absolute constant added to b. The library adds eps relative to a running max |g| per tensor
    (its update is n/(b + eps*c), c = max over steps of max|g|): compare with eps = 0, or with gradients whose
    running max is exactly 1 (c = 1 from the first step on).
    """
    b1 = beta1; b2 = beta1 if beta2 is None else beta2
    ws, out = _copy(ws), []
    ms, ss = [[0.0]*len(w) for w in ws], [[0.0]*len(w) for w in ws]
    for step in grads:
        for j, g in enumerate(step):
            g = _g(g, maximize)
            if g is None: continue
            _decay(ws[j], lr, weight_decay)
            for i, x in enumerate(g):
                gp = abs(x)**p
                ms[j][i] = b1*ms[j][i] + (1 - b1)*x
                ss[j][i] = b2*ss[j][i] + (1 - b2)*gp
                if nesterov: n, b = b1*ms[j][i] + (1 - b1)*x, (b2*ss[j][i] + (1 - b2)*gp)**(1/p)
                else: n, b = ms[j][i], ss[j][i]**(1/p)
                den = b + eps
                ws[j][i] -= lr*(n/den if den > 0 else 0.0)
        out.append(_copy(ws))
    return out


# ---------------------------------------------------------------------------------------------------------------
# Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms") and Adan (Xie et al. 2022)

def ref_lion(ws, grads, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, maximize=False):
    """Lion, Algorithm 2 / Program 1 of Chen et al. (2023).

    c = b1*m + (1-b1)*g; p <- p(1 - lr*wd) - lr*sign(c); m = b2*m + (1-b2)*g (m = 0 at the start; sign(0) = 0).
    """
    b1, b2 = betas
    ws, out = _copy(ws), []
    ms = [[0.0]*len(w) for w in ws]
    for step in grads:
        for j, g in enumerate(step):
            g = _g(g, maximize)
            if g is None: continue
            _decay(ws[j], lr, weight_decay)
            for i, x in enumerate(g):
                c = b1*ms[j][i] + (1 - b1)*x
                ws[j][i] -= lr*_sign(c)
                ms[j][i] = b2*ms[j][i] + (1 - b2)*x
        out.append(_copy(ws))
    return out


def ref_adan(ws, grads, lr=1e-3, betas=(0.98, 0.92, 0.99), eps=1e-8, weight_decay=0.0, no_prox=False, maximize=False):
    """Adan (Xie et al. 2022, Algorithm 1) as the authors' PyTorch code (sail-sg/Adan, adan.py) runs it.

    Step t counts per group from 1 (also for bias corrections). The previous gradient of a tensor defaults to its
    current one (the code sets it at t = 1 or when the tensor is first seen), so diff_1 = 0. m, d, n start at 0:
      diff = g_t - g_{t-1};  m = b1*m + (1-b1)*g;  d = b2*d + (1-b2)*diff;  n = b3*n + (1-b3)*(g + b2*diff)^2
      denom = sqrt(n)/sqrt(1-b3^t) + eps
      p <- p - lr/(1-b1^t)*m/denom - lr*b2/(1-b2^t)*d/denom
    then, with no_prox False, the proximal decay p <- p/(1 + lr*wd); with no_prox True the decay p <- p(1 - lr*wd) is
    applied BEFORE the update instead. (Gradient clipping of the official code is off: max_grad_norm = 0.)
    """
    b1, b2, b3 = betas
    ws, out = _copy(ws), []
    ms, dd, ns = [[0.0]*len(w) for w in ws], [[0.0]*len(w) for w in ws], [[0.0]*len(w) for w in ws]
    prev = [None]*len(ws)
    for t, step in enumerate(grads, 1):
        bc1, bc2, bc3 = 1 - b1**t, 1 - b2**t, 1 - b3**t
        for j, g in enumerate(step):
            g = _g(g, maximize)
            if g is None: continue
            if prev[j] is None or t == 1: prev[j] = list(g)
            if no_prox: _decay(ws[j], lr, weight_decay)
            for i, x in enumerate(g):
                diff = x - prev[j][i]
                ms[j][i] = b1*ms[j][i] + (1 - b1)*x
                dd[j][i] = b2*dd[j][i] + (1 - b2)*diff
                ns[j][i] = b3*ns[j][i] + (1 - b3)*(x + b2*diff)**2
                denom = math.sqrt(ns[j][i])/math.sqrt(bc3) + eps
                ws[j][i] = ws[j][i] - lr/bc1*ms[j][i]/denom - lr*b2/bc2*dd[j][i]/denom
                if not no_prox: ws[j][i] = ws[j][i]/(1 + lr*weight_decay)
            prev[j] = list(g)
        out.append(_copy(ws))
    return out


# ---------------------------------------------------------------------------------------------------------------
# AGR (Jiang et al., shared/papers/agr_adaptive_gradient_regularization.txt)

def ref_psi(g):
    """The AGR operator on one tensor, Eqs. 1-2: Psi(g)_i = g_i - alpha_i*g_i, alpha_i = |g_i|/sum_k |g_k|.

    An all-zero tensor stays 0 (no 0/0); a one-element tensor has alpha = 1, so Psi(g) = 0.
    """
    S = sum(abs(x) for x in g)
    if S == 0: return [0.0*x for x in g]
    return [x - abs(x)/S*x for x in g]


def ref_agradamw(ws, grads, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, min_ndim=2, until=None,
                 total_steps=None, ndims=None, maximize=False):
    """AdamW with AGR, Algorithm 2 of the AGR paper, as `gradual_opt.transforms.AGRAdamW` runs it.

    m = b1*m + (1-b1)*Psi(g) (Psi per tensor, only for tensors with ndims[j] >= min_ndim and only while
    t <= until*N, t the group's step); v = b2*v + (1-b2)*g^2 with the raw g; k = the tensor's own step count;
    p <- p(1 - lr*wd) - lr*(m/(1-b1^k))/(sqrt(v/(1-b2^k)) + eps).
    `ndims` lists each tensor's number of dims (None: all 2, i.e. AGR everywhere with the default min_ndim).
    Note: the paper's Algorithm 2 adds lambda*theta to g before Psi (L2) and decays by eta_t*lambda*theta with the
    schedule multiplier; the library (and this reference) use AdamW's decoupled p(1 - lr*wd) only.
    """
    b1, b2 = betas
    ndims = [2]*len(ws) if ndims is None else ndims
    ws, out = _copy(ws), []
    ms, vs, ks = [[0.0]*len(w) for w in ws], [[0.0]*len(w) for w in ws], [0]*len(ws)
    for t, step in enumerate(grads, 1):
        on = until is None or t <= until*total_steps
        for j, g in enumerate(step):
            g = _g(g, maximize)
            if g is None: continue
            ks[j] += 1; k = ks[j]
            gbar = ref_psi(g) if on and ndims[j] >= min_ndim else g
            _decay(ws[j], lr, weight_decay)
            for i, x in enumerate(g):
                ms[j][i] = b1*ms[j][i] + (1 - b1)*gbar[i]
                vs[j][i] = b2*vs[j][i] + (1 - b2)*x*x
                den = math.sqrt(vs[j][i]/(1 - b2**k)) + eps
                ws[j][i] -= lr*(ms[j][i]/(1 - b1**k))/den if den > 0 else 0.0
        out.append(_copy(ws))
    return out


# ---------------------------------------------------------------------------------------------------------------
# Plain SGD (torch.optim.SGD)

def ref_sgd(ws, grads, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0, maximize=False,
            decoupled=False):
    """torch.optim.SGD per element (its documented algorithm).

    g <- -g if maximize; g <- g + wd*p (L2, torch's SGD) unless `decoupled`; momentum: first step buf = g, then
    buf = mom*buf + (1-damp)*g; Nesterov d = g + mom*buf, else d = buf; p <- p - lr*d.
    decoupled=True instead decays p <- p(1 - lr*wd) before the step (GSGD's form once its exponent reaches 1).
    """
    ws, bufs, out = _copy(ws), [None]*len(ws), []
    for step in grads:
        for j, g in enumerate(step):
            g = _g(g, maximize)
            if g is None: continue
            if weight_decay != 0 and not decoupled: g = [x + weight_decay*w for x, w in zip(g, ws[j])]
            if momentum != 0:
                if bufs[j] is None: bufs[j] = list(g)
                else: bufs[j] = [momentum*b + (1 - dampening)*x for b, x in zip(bufs[j], g)]
                d = [x + momentum*b for x, b in zip(g, bufs[j])] if nesterov else list(bufs[j])
            else: d = g
            if decoupled: _decay(ws[j], lr, weight_decay)
            ws[j] = [w - lr*x for w, x in zip(ws[j], d)]
        out.append(_copy(ws))
    return out


# ---------------------------------------------------------------------------------------------------------------
# Gradient transforms: each maps one step's gradient list (flat lists) to the transformed list.

def _numel(shape):
    n = 1
    for s in shape: n *= s
    return n

def ref_agr(grads, shapes=None, min_ndim=2):
    """AGR as a gradient transform: Psi (Eqs. 1-2, `ref_psi`) on every tensor with at least `min_ndim` dims.

    shapes=None: every tensor is transformed. None gradients stay None.
    """
    return [None if g is None else ref_psi(g) if shapes is None or len(shapes[j]) >= min_ndim else list(map(float, g))
            for j, g in enumerate(grads)]


def ref_centralize(grads, shapes):
    """Gradient centralization (Yong et al. 2020, the GC operator): for a tensor with ndim >= 2, subtract from each slice
    g[i, ...] its mean over all dims but the first; tensors with fewer dims (or no entries) are unchanged.
    """
    out = []
    for g, shape in zip(grads, shapes):
        if g is None: out.append(None); continue
        g = [float(x) for x in g]
        if len(shape) < 2 or len(g) == 0: out.append(g); continue
        row = _numel(shape[1:])
        new = []
        for r in range(shape[0]):
            sl = g[r*row:(r + 1)*row]
            mu = sum(sl)/row
            new += [x - mu for x in sl]
        out.append(new)
    return out


def _unbiased_std(xs):
    "Unbiased standard deviation (ddof = 1); 0 for fewer than 2 entries (the library's `global_std`)."
    n = len(xs)
    if n < 2: return 0.0
    mu = sum(xs)/n
    return math.sqrt(sum((x - mu)**2 for x in xs)/(n - 1))

def _autoscale_a(s, p, eps):
    "a = (4/(|ln s| + eps))^p, the paper's simplified Eq. 1; s = 0 gives a = 0 (torch: log 0 = -inf)."
    return 0.0 if s == 0 else (4.0/(abs(math.log(s)) + eps))**p

def ref_autoscale(grads, shapes, p, eps=1e-8, center=True, scale=True, max_scale=None):
    """Gradient autoscaled normalization, Eqs. 1-2 (shared/papers/gan_gradient_autoscaled_normalization.txt).

    Eligible: tensors with ndim >= 2 (dim > 1). s = unbiased std of all eligible entries together;
    a = (4/(|ln s| + eps))^p (the "simplified" form of Eq. 1 the library uses; Eq. 1 as printed equals
    2^(p+1)/(|ln s| + eps), which agrees only at p = 1), clamped to `max_scale` if given; each eligible tensor minus
    its OWN mean over all its entries (center), times a (scale); others unchanged.
    """
    elig = [j for j, (g, sh) in enumerate(zip(grads, shapes)) if g is not None and len(sh) >= 2]
    s = _unbiased_std([float(x) for j in elig for x in grads[j]])
    a = _autoscale_a(s, p, eps)
    if max_scale is not None: a = min(a, max_scale)
    if not scale: a = 1.0
    out = [None if g is None else [float(x) for x in g] for g in grads]
    for j in elig:
        g = out[j]
        mu = sum(g)/len(g) if (center and g) else 0.0
        out[j] = [(x - mu)*a for x in g]
    return out


def ref_autoscale_steps(grad_steps, shapes, p=None, eps=1e-8, center=True, scale=True, max_scale=None):
    """`ref_autoscale` over several steps with Eq. 1's one-shot rule for p_t when p is None: p = 2 until the first
    step with s > 0; there a_1 is computed with p = 2, and p_t = 1 for all later steps if a_1 < 0.5, else 2.
    Returns (list over steps of transformed gradient lists, the final p_t).
    """
    out, p_t = [], p
    for grads in grad_steps:
        out.append(ref_autoscale(grads, shapes, 2 if p_t is None else p_t, eps, center, scale, max_scale))
        if p_t is None:
            elig = [x for g, sh in zip(grads, shapes) if g is not None and len(sh) >= 2 for x in g]
            s = _unbiased_std([float(x) for x in elig])
            if s > 0: p_t = 1 if _autoscale_a(s, 2, eps) < 0.5 else 2
    return out, p_t


# ---------------------------------------------------------------------------------------------------------------
# The GSGD paper's baselines (its Appendix A.3 leaves the comparison with normalised gradient/momentum descent open):
# signSGD with momentum (Signum, Bernstein et al. 2018) and normalised momentum descent (NMD)

def ref_signum(ws, grads, lr, momentum=0.9, weight_decay=0.0, maximize=False):
    """Signum (Bernstein et al. 2018, signSGD with momentum) with decoupled decay.

    m = b*m + (1-b)*g from m = 0, per entry; p <- p(1 - lr*wd) - lr*sign(m), sign(0) = 0. momentum=0 is signSGD.
    """
    ws, out = _copy(ws), []
    ms = [[0.0]*len(w) for w in ws]
    for step in grads:
        for j, g in enumerate(step):
            g = _g(g, maximize)
            if g is None: continue
            _decay(ws[j], lr, weight_decay)
            for i, x in enumerate(g):
                ms[j][i] = momentum*ms[j][i] + (1 - momentum)*x
                ws[j][i] -= lr*_sign(ms[j][i])
        out.append(_copy(ws))
    return out


def ref_nmd(ws, grads, lr, momentum=0.9, dampening=0.0, nesterov=False, weight_decay=0.0, maximize=False):
    """Normalised momentum descent: torch SGD's momentum direction, one step of l2 length lr over all tensors.

    Per tensor, as torch.optim.SGD: buf = g at the tensor's first step, then buf = mom*buf + (1-damp)*g;
    d = g + mom*buf with Nesterov, else d = buf (momentum=0: d = g, normalised gradient descent).
    ||d|| = sqrt(sum of d_i^2 over every entry of every tensor that has a gradient at this step);
    p <- p(1 - lr*wd) - lr*d/||d||, and no step (decay only) when ||d|| = 0.
    """
    ws, bufs, out = _copy(ws), [None]*len(ws), []
    for step in grads:
        ds = {}
        for j, g in enumerate(step):
            g = _g(g, maximize)
            if g is None: continue
            if momentum == 0: ds[j] = g; continue
            if bufs[j] is None: bufs[j] = list(g)
            else: bufs[j] = [momentum*b + (1 - dampening)*x for b, x in zip(bufs[j], g)]
            ds[j] = [x + momentum*b for x, b in zip(g, bufs[j])] if nesterov else list(bufs[j])
        norm = math.sqrt(sum(x*x for d in ds.values() for x in d))
        for j, d in ds.items():
            _decay(ws[j], lr, weight_decay)
            ws[j] = [w - (lr*x/norm if norm > 0 else 0.0) for w, x in zip(ws[j], d)]
        out.append(_copy(ws))
    return out
