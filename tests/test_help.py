"What `help()` shows for every public class: each constructor parameter with its default, a first line, and no raw LaTeX."
import inspect, pydoc, re
import pytest
import gradual_opt.all as ga

LATEX = re.compile(r'\\[a-zA-Z]+')     # \beta, \leftarrow, \text ...: a backslash command as help() would print it

def _public():
    """Every public name of the package: `gradual_opt.all` (the star import) and `gradual_opt` (its torch-only API). The trainer modules
    `gradual_opt.hf` and `gradual_opt.lightning` are left out: importing their frameworks is slow, and their callbacks take no arguments."""
    import gradual_opt
    objs = [getattr(ga, n) for n in ga.__all__] + [getattr(gradual_opt, n) for n in gradual_opt.__all__]
    return list({id(o): o for o in objs}.values())

def _classes():
    "Every public class that defines its own `__init__` somewhere below `object` in the package."
    out = []
    for obj in _public():
        if not inspect.isclass(obj) or not obj.__module__.startswith('gradual_opt'): continue
        if any('__init__' in vars(c) and c.__module__.startswith('gradual_opt') for c in obj.__mro__): out.append(obj)
    return out

def _render(cls)->str: return pydoc.render_doc(cls, renderer=pydoc.plaintext)

def test_there_are_classes_to_check():
    names = {c.__name__ for c in _classes()}
    for n in ('GSGD', 'GAdam', 'LPSGD', 'S3', 'S3Untied', 'Lion', 'Adan', 'AGRAdamW', 'Centralize', 'AutoscaleNorm', 'AGR'):
        assert n in names, n

@pytest.mark.parametrize('cls', _classes(), ids=lambda c: c.__name__)
def test_help_lists_every_parameter_and_default(cls):
    text = _render(cls)
    for name, p in inspect.signature(cls).parameters.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD): continue
        assert re.search(rf'\b{re.escape(name)}\b', text), f"{cls.__name__}: help() does not name the parameter {name!r}"
        if p.default is not inspect.Parameter.empty:
            assert repr(p.default) in text, f"{cls.__name__}: help() does not show {name}'s default {p.default!r}"

@pytest.mark.parametrize('cls', _classes(), ids=lambda c: c.__name__)
def test_help_has_no_raw_latex(cls):
    text = _render(cls)
    bad = [l.strip() for l in text.splitlines() if '$' in l or LATEX.search(l)]
    assert not bad, f"{cls.__name__}: help() shows raw LaTeX:\n" + '\n'.join(bad[:10])

@pytest.mark.parametrize('cls', _classes(), ids=lambda c: c.__name__)
def test_help_first_line(cls):
    doc = inspect.getdoc(cls)
    assert doc and doc.splitlines()[0].strip(), f"{cls.__name__} has no docstring"

def _own_init(cls):
    "The `__init__` that `cls(...)` runs, as defined in the package."
    return next(c.__dict__['__init__'] for c in cls.__mro__ if '__init__' in vars(c))

@pytest.mark.parametrize('cls', _classes(), ids=lambda c: c.__name__)
def test_help_shows_each_parameters_meaning(cls):
    "The comment after each parameter in the source (nbdev's documented signature) is what help() and IDEs must show."
    from gradual_opt.signatures import param_comments
    text = ' '.join(_render(cls).split())
    for name, comment in param_comments(_own_init(cls)).items():
        assert ' '.join(comment.split()) in text, f"{cls.__name__}: help() does not show the meaning of {name!r}: {comment!r}"

def test_parameters_have_meanings():
    "The optimizers' and transforms' own parameters each carry a comment (the meaning help() shows), not just a name."
    from gradual_opt.signatures import param_comments
    from gradual_opt.registry import registry
    for m in registry():
        init = m.cls.__init__
        missing = [n for n in inspect.signature(init).parameters if n not in ('self', 'params') and n not in param_comments(init)]
        assert not missing, f"{m.cls.__name__}.__init__: parameters without a comment {missing}"

def test_with_transforms_classes_show_their_optimizers_parameters():
    "A class made by `with_transforms` takes its optimizer's arguments, so help() and `inspect.signature` show those."
    from gradual_opt import with_transforms, S3, AGR
    from gradual_opt.signatures import param_comments
    cls = with_transforms(S3, AGR())
    assert inspect.signature(cls) == inspect.signature(S3)
    text = ' '.join(_render(cls).split())
    for name, comment in param_comments(S3.__init__).items(): assert ' '.join(comment.split()) in text, name
    assert not LATEX.search(text) and '$' not in text
