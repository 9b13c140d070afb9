"Checks on the package as installed: the public API, the export, the README and the test command."
import os, subprocess, sys, re
import pytest
from pathlib import Path
import torch

ROOT = Path(__file__).resolve().parents[1]

def test_public_api():
    import gradual_opt.all as ga
    for name in ['GSGD', 'GAdam', 'fastai_opt', 'FitSchedule', 'lp_direction', 'gsgd_exponent', 'gadam_power', 'cosine_p']:
        assert name in ga.__all__, name
    ns = {}
    exec('from gradual_opt.all import *', ns)
    assert issubclass(ns['GSGD'], torch.optim.Optimizer) and issubclass(ns['GAdam'], torch.optim.Optimizer)

def test_readme_names_the_ci_test_command():
    readme = (ROOT/'README.md').read_text(encoding='utf-8')
    assert 'make test' in readme and 'make reproduce' in readme
    assert 'make test' in (ROOT/'.ci'/'run').read_text()

def test_readme_in_sync():
    r = subprocess.run([sys.executable, str(ROOT/'tools'/'make_readme.py'), '--check'], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr

def test_every_notebook_is_clean_of_outputs_with_errors():
    import json
    for nb in (ROOT/'nbs').glob('*.ipynb'):
        for c in json.loads(nb.read_text(encoding='utf-8'))['cells']:
            for o in c.get('outputs', []):
                assert o.get('output_type') != 'error', f'{nb.name} has a saved error output'

# --- What users install and import (tools/check_install.py checks the same from a built wheel and sdist in a fresh venv)
API = 'GSGD, GAdam, LPSGD, S3, Lion, Adan, AGRAdamW, with_transforms, AGR, Centralize, AutoscaleNorm, create_optimizer'
HEAVY = ['fastai', 'fastcore', 'matplotlib', 'pandas', 'sklearn', 'seaborn']

def _fresh(code):
    "Run `code` in a fresh interpreter (cwd: the repo root) and return its stdout."
    r = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout

def test_import_needs_torch_only():
    for stmt in ('import gradual_opt', f'from gradual_opt import {API}'):
        out = _fresh(f'import sys\n{stmt}\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))')
        assert out.strip() == '[]', f'{stmt} imported {out.strip()}'

def test_fastai_module_names_the_extra_when_fastai_is_missing():
    # sys.modules['fastai'] = None makes `import fastai` raise ImportError, as it does where fastai is not installed
    r = subprocess.run([sys.executable, '-c', 'import sys; sys.modules["fastai"] = None\nimport gradual_opt.fastai'],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode != 0 and 'ImportError' in r.stderr and 'pip install "gradual_opt[fastai]"' in r.stderr, r.stderr

STUDY_DEPS = ('matplotlib', 'mnist1d', 'scipy', 'pandas', 'sklearn', 'fastai')   # what the study code needs (torch loads numpy)

def _studies_loaded(code, warnings_are_errors=True, deps=STUDY_DEPS):
    "Run `code` in a fresh interpreter (`python -W error`): the `gradual_opt.studies` modules and study dependencies it loaded."
    probe = (f"{code}\nimport sys\nprint(sorted(m for m in sys.modules if m == 'gradual_opt.studies' or "
             f"m.startswith('gradual_opt.studies.') or m.split('.')[0] in {deps!r}))")
    r = subprocess.run([sys.executable, *(['-W', 'error'] if warnings_are_errors else []), '-c', probe],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    # a file left open is a ResourceWarning raised in a destructor: Python prints it ("Exception ignored") and goes on
    assert not warnings_are_errors or 'Warning' not in r.stderr, r.stderr
    return r.stdout.strip().splitlines()[-1]

def test_the_library_loads_no_study_code_and_leaves_no_file_open():
    "`import gradual_opt`, the registry and the factory: no study module, no study dependency, no warning (issue 23)."
    code = ("import torch; import gradual_opt as g; g.list_optimizers(); g.list_optimizers('transform'); g.registry(); "
            "g.create_optimizer(torch.nn.Linear(3, 2), 'GSGD', lr=0.1, total_steps=10); "
            "g.create_optimizer(torch.nn.Linear(3, 2), 'S3', transforms=('AGR',)); g.param_groups(torch.nn.Linear(3, 2))")
    assert _studies_loaded(code) == '[]'

@pytest.mark.parametrize('mod', ['fastai', 'hf', 'lightning'])
def test_the_integrations_load_no_study_code(mod):
    "The trainer integrations import their trainer, never the study package (its data helpers included)."
    pytest.importorskip({'hf': 'transformers', 'lightning': 'lightning.pytorch'}.get(mod, mod))
    assert _studies_loaded(f'import gradual_opt.{mod}', warnings_are_errors=False, deps=()) == '[]'

def _setup_kwargs():
    "The keyword arguments setup.py hands to setuptools.setup: setup.py run as pip runs it, with setup() recording."
    import runpy, setuptools
    seen, orig, cwd = {}, setuptools.setup, Path.cwd()
    try:
        setuptools.setup = lambda **kw: seen.update(kw)
        os.chdir(ROOT); runpy.run_path(str(ROOT/'setup.py'), run_name='__main__')
    finally: setuptools.setup = orig; os.chdir(cwd)
    return seen

def test_requirements_torch_only_and_the_extras():
    from packaging.requirements import Requirement
    kw = _setup_kwargs()
    assert [Requirement(r).name for r in kw['install_requires']] == ['torch'], kw['install_requires']
    assert set(kw['extras_require']) == {'fastai', 'dev'}
    fastai, = [Requirement(r) for r in kw['extras_require']['fastai']]
    assert fastai.name == 'fastai' and not fastai.marker
    # The fastai extra covers the development pin (2.8.7, fastcore 1) and the newest 2.8.x (fastcore 2), and no fastcore
    # pin reaches users: fastcore<2 is a development requirement only.
    for v in ('2.8.7', '2.8.12'): assert fastai.specifier.contains(v), (v, fastai)
    pins = dict(l.split('==') for l in (ROOT/'constraints.txt').read_text().splitlines() if '==' in l and not l.startswith('#'))
    assert fastai.specifier.contains(pins['fastai'])
    dev = {Requirement(r).name: Requirement(r) for r in kw['extras_require']['dev']}
    for name in ('nbdev', 'fastcore', 'execnb', 'matplotlib', 'seaborn', 'build', 'pytest'): assert name in dev, name
    assert not dev['fastcore'].specifier.contains('2.0.0')
    for name in ('fastcore', 'matplotlib', 'seaborn'):
        assert all(Requirement(r).name != name for r in kw['install_requires'] + kw['extras_require']['fastai'])

def test_distribution_metadata():
    kw = _setup_kwargs()
    assert kw['version'].startswith('0.') and 'Development Status :: 3 - Alpha' in kw['classifiers']
    assert kw['license_expression'] == 'Apache-2.0' and kw['license_files'] == ['LICENSE']
    assert not any(c.startswith('License ::') for c in kw['classifiers'])   # superseded by the expression (PEP 639)
    assert 'Apache License' in (ROOT/'LICENSE').read_text() and (ROOT/'CHANGELOG.md').is_file()
    assert (ROOT/'gradual_opt'/'py.typed').is_file() and 'py.typed' in kw['package_data']['gradual_opt']
    manifest = (ROOT/'MANIFEST.in').read_text()
    for f in ('settings.ini', 'README.md', 'LICENSE', 'CHANGELOG.md', 'py.typed'): assert f in manifest, f

def test_star_import_exports_no_test_helper_and_shadows_no_fastai_name():
    "`from gradual_opt.all import *` next to fastai's star imports: no name pytest would collect, none that hides fastai's."
    code = ("import gradual_opt.all as ga; ns = {}\n"
            "for m in ('fastai.vision.all', 'fastai.text.all', 'fastai.tabular.all', 'fastai.callback.all'): exec(f'from {m} import *', ns)\n"
            "print(sorted(set(ga.__all__) & set(ns))); print(sorted(n for n in ga.__all__ if n.startswith('test')))")
    r = subprocess.run([sys.executable, '-W', 'ignore', '-c', code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split('\n')[:2] == ['[]', '[]'], r.stdout
