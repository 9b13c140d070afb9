"Tests of gradual_opt.studies.text: the corpus and its split, the batch sampler, the causal transformer, the schedule, the spike detector and lm_run."
import hashlib, math
import pytest, torch
from gradual_opt.studies.text import (CharCorpus, char_corpus, batch_sampler, eval_windows, CharTransformer, count_params, ClippedAdamW,
                              warmup_cosine, spike_steps, eval_loss, lm_run)

torch.set_num_threads(1)

@pytest.fixture(scope='module')
def corpus(): return char_corpus()

def test_corpus_is_pydoc_topics_in_sorted_order_with_its_hash(corpus):
    from pydoc_data.topics import topics
    text = '\n\n'.join(topics[k] for k in sorted(topics))     # recomputed independently of the module
    assert corpus.text == text
    assert corpus.sha256 == hashlib.sha256(text.encode('utf-8')).hexdigest()
    info = corpus.info()
    assert info['sha256'] == corpus.sha256 and info['n_chars'] == len(text) and info['python'].count('.') == 2
    assert corpus.vocab_size == len(set(text)) and corpus.decode(corpus.encode(text[:500])) == text[:500]

def test_split_is_the_contiguous_tail_and_deterministic(corpus):
    n = len(corpus.text); n_valid = round(0.1 * n)
    assert len(corpus.valid) == n_valid and len(corpus.train) == n - n_valid
    assert corpus.decode(corpus.train) == corpus.text[:n - n_valid]
    assert corpus.decode(corpus.valid) == corpus.text[n - n_valid:]
    again = CharCorpus(corpus.text, 0.1)                                  # a fresh build gives the same split
    assert torch.equal(again.train, corpus.train) and torch.equal(again.valid, corpus.valid)
    other = CharCorpus(corpus.text, 0.2)
    assert len(other.valid) == round(0.2 * n) and torch.equal(other.valid[-n_valid:], corpus.valid)
    with pytest.raises(ValueError): CharCorpus('abc', 1.0)

def test_sampler_is_seeded_and_shifted(corpus):
    a, b, c = (batch_sampler(corpus.train, 8, 32, seed=s) for s in (5, 5, 6))
    for _ in range(3):
        (xa, ya), (xb, yb), (xc, _) = next(a), next(b), next(c)
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and not torch.equal(xa, xc)
        assert xa.shape == ya.shape == (8, 32)
        assert torch.equal(xa[:, 1:], ya[:, :-1])
        for row_x, row_y in zip(xa, ya):                                   # each window is a piece of the training text
            s = corpus.decode(torch.cat([row_x, row_y[-1:]]))
            assert s in corpus.text[:len(corpus.train)]
    x, y = eval_windows(corpus.valid, 64)
    assert x.shape == y.shape and x.shape[1] == 64 and torch.equal(x.flatten()[1:], y.flatten()[:-1])

def test_model_shapes_and_tied_readout(corpus):
    m = CharTransformer(corpus.vocab_size, d=32, n_layer=2, n_head=4, ctx=24)
    out = m(torch.randint(corpus.vocab_size, (3, 24)))
    assert out.shape == (3, 24, corpus.vocab_size)
    assert m.head.weight is m.tok.weight
    assert count_params(m) == sum(p.numel() for p in m.parameters())
    with pytest.raises(ValueError): m(torch.zeros(1, 25, dtype=torch.long))
    with pytest.raises(ValueError): CharTransformer(10, d=30, n_head=4)

@pytest.mark.parametrize('j', [0, 7, 15])
def test_causal_a_future_token_changes_no_earlier_logit(corpus, j):
    torch.manual_seed(1)
    m = CharTransformer(corpus.vocab_size, d=32, n_layer=3, n_head=4, ctx=16).double().eval()
    ids = torch.randint(corpus.vocab_size, (4, 16)); ids2 = ids.clone(); ids2[:, j] = (ids[:, j] + 7) % corpus.vocab_size
    with torch.no_grad(): a, b = m(ids), m(ids2)
    assert torch.equal(a[:, :j], b[:, :j])                                # bit for bit: no information flows backwards
    assert (a[:, j:] - b[:, j:]).abs().amax(-1).min() > 1e-8              # and the changed token does reach its own and later positions

def test_loss_at_init_is_near_uniform(corpus):
    torch.manual_seed(0)
    m = CharTransformer(corpus.vocab_size, d=32, n_layer=1, n_head=2, ctx=32)
    assert abs(eval_loss(m, corpus.valid[:5000], 32) - math.log(corpus.vocab_size)) < 0.1

def test_warmup_cosine():
    assert warmup_cosine(1, 100, 10) == pytest.approx(0.1) and warmup_cosine(10, 100, 10) == pytest.approx(1)
    assert warmup_cosine(100, 100, 10) == pytest.approx(0.1) and warmup_cosine(55, 100, 10) == pytest.approx(0.55)
    vals = [warmup_cosine(t, 100, 10) for t in range(10, 101)]
    assert all(a >= b for a, b in zip(vals, vals[1:]))

def test_spike_steps():
    assert spike_steps([3., 2., 1., 1.2, 1.6, 1.7, 1.0, float('nan'), 1.], start=2, k=1.5, smooth=1) == [4, 7]
    one = [2.] * 10 + [3.5] + [2.] * 10
    assert spike_steps(one, start=5, smooth=1) == [10] and spike_steps(one, start=5, smooth=3) == []
    assert spike_steps([2.] * 10 + [3.] * 6 + [2.] * 5, start=5, smooth=3) == [10]
    assert spike_steps([5.] + [2.] * 20, start=0, smooth=1) == []           # falling loss: nothing

def test_clipped_adamw_equals_adamw_when_nothing_is_clipped_and_bounds_steps():
    torch.manual_seed(0)
    w0 = torch.randn(20)
    a, b = w0.clone().requires_grad_(), w0.clone().requires_grad_()
    oa, ob = ClippedAdamW([a], lr=1e-2, clip=1e9, weight_decay=0.1), torch.optim.AdamW([b], lr=1e-2, weight_decay=0.1)
    for _ in range(5):
        g = torch.randn(20)
        a.grad, b.grad = g.clone(), g.clone(); oa.step(); ob.step()
    assert torch.allclose(a, b, atol=1e-6)
    c = w0.clone().requires_grad_(); oc = ClippedAdamW([c], lr=0.1, betas=(0.9, 0.999))
    for k in range(20):
        before = c.detach().clone(); c.grad = torch.randn(20) * (100. if k == 10 else 0.01); oc.step()
        assert (c.detach() - before).abs().max() <= 0.1 + 1e-7

def test_lm_run_every_family_and_update_record(corpus):
    kw = dict(steps=4, warmup=2, bs=2, ctx=16, d=16, n_layer=1, n_head=2, eval_chars=2000, record_updates=True)
    for name, okw in [('AdamW', {}), ('S3', dict(p=3)), ('Lion', {}), ('GSGD-momentum', {}), ('AdamW-clip', {})]:
        r = lm_run(name, 1e-2, opt_kw=okw, **kw)
        assert len(r['train_loss']) == 4 and math.isfinite(r['val_loss']) and not r['diverged']
        assert all(0 < m <= x for m, x in zip(r['mean_update'], r['max_update']))
        if name in ('S3', 'AdamW-clip'): assert max(r['max_update']) <= 1 + 1e-5
    r1, r2 = lm_run('AdamW', 1e-2, seed=3, **kw), lm_run('AdamW', 1e-2, seed=3, **kw)
    assert r1['train_loss'] == r2['train_loss'] and r1['val_loss'] == r2['val_loss']        # a seed fixes the run
    assert lm_run('AdamW', 1e-2, seed=4, **kw)['train_loss'] != r1['train_loss']

def test_lm_run_flags_divergence(corpus):
    r = lm_run('SGD', 1e4, steps=6, warmup=1, bs=2, ctx=16, d=16, n_layer=1, n_head=2, eval_chars=2000)
    assert r['diverged'] and math.isnan(r['val_loss']) and len(r['train_loss']) <= 6
