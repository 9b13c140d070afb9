"""What a user gets from `pip install`, checked in one fresh venv (never .venv), each sub-stage timed:

1. `python -m build`: an sdist and a wheel.
2. The wheel installs torch and torch's own dependencies, nothing else; its metadata (torch the only requirement,
   the `fastai` and `dev` extras, license, classifiers) is what settings.ini says.
3. The sdist installs too (over the wheel, --no-deps) and imports.
4. `from gradual_opt import ...` (the public API) imports no fastai/fastcore/matplotlib/pandas/sklearn/seaborn (nor, with
   `list_optimizers()` and `create_optimizer()`, any `gradual_opt.studies` module, which the package ships), and adds
   at most 0.5 s to `import torch` (timed in one process, torch first, best of 5 fresh processes).
5. `pip install "<wheel>[fastai]" "fastai>=2.8.8"` resolves to the newest fastai (fastcore 2), next to which
   tests/fastai_latest_smoke.py trains with GSGD (`fit`) and S3 (`fit_one_cycle`).

torch: the build tested here pulls in the CUDA libraries (about 5 GiB installed). A second copy ran CI out of disk,
so by default the fresh venv *shares* the running (dev) interpreter's torch and its dependency closure, read-only:
symlinks to exactly those distributions in a folder outside the venv, added to its sys.path by a .pth file (pip will
not uninstall anything outside its environment, so nothing there can be changed). The venv starts as a user's venv
with torch in it, and step 2 checks that the wheel then adds gradual-opt and nothing else. `--fresh-torch` has pip
install torch into the venv instead (from where pip finds it, pip.conf or PIP_FIND_LINKS; needs about 6 GiB free).
torch is held at the version constraints.txt tests; nothing else is constrained, so fastai and its dependencies
resolve as they would for a user.
Run: .venv/bin/python tools/check_install.py [--keep] [--fresh-torch]   (CI: .ci/run)"""
import json, os, shutil, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
API = 'GSGD, GAdam, LPSGD, S3, Lion, Adan, AGRAdamW, with_transforms, AGR, Centralize, AutoscaleNorm, create_optimizer'
HEAVY = ['fastai', 'fastcore', 'matplotlib', 'pandas', 'sklearn', 'seaborn']
MAX_IMPORT_OVERHEAD_S = 0.5

def stage(name):
    "Decorator-free timer: `with stage('x'):` prints the seconds the block took."
    class _S:
        def __enter__(self): self.t = time.perf_counter(); print(f'--- {name}', flush=True)
        def __exit__(self, *exc):
            print(f'--- {name}: {time.perf_counter()-self.t:.1f} s' + (' (FAILED)' if exc[0] else ''), flush=True)
    return _S()

def sh(*cmd, cwd=None, env=None, capture=False):
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, text=True, capture_output=True)
    if r.returncode != 0:
        print(r.stdout[-6000:], r.stderr[-6000:], sep='\n')
        raise SystemExit(f'FAILED ({r.returncode}): {" ".join(map(str, cmd))}')
    return r.stdout if capture else None

# Runs inside the fresh venv: installed distributions vs torch's requirement closure (markers and extras evaluated).
CLOSURE = r'''
import json, sys, importlib.metadata as md
from pip._vendor.packaging.requirements import Requirement
from pip._vendor.packaging.utils import canonicalize_name as canon
def closure(name, extras=(), seen=None):
    seen = {} if seen is None else seen
    key = canon(name); new = set(extras) - seen.get(key, set())
    if key in seen and not new: return seen
    seen.setdefault(key, set()).update(extras)
    try: reqs = md.requires(name) or []
    except md.PackageNotFoundError: return seen   # not installed: stays in the closure, reported as missing
    for r in map(Requirement, reqs):
        if r.marker is None or any(r.marker.evaluate({'extra': e}) for e in [''] + sorted(seen[key])):
            closure(r.name, r.extras, seen)
    return seen
installed = {canon(d.metadata['Name']) for d in md.distributions()}
print(json.dumps({'installed': sorted(installed), 'torch_closure': sorted(closure('torch'))}))
'''

# Runs inside the fresh venv: the installed package's metadata.
METADATA = r'''
import json, importlib.metadata as md, importlib.resources as res
m = md.metadata('gradual_opt')
print(json.dumps({'requires': md.requires('gradual_opt'), 'extras': m.get_all('Provides-Extra'),
                  'classifiers': m.get_all('Classifier'), 'license': m.get('License-Expression'),
                  'license_files': m.get_all('License-File'), 'version': m['Version'],
                  'py_typed': res.files('gradual_opt').joinpath('py.typed').is_file()}))
'''

# Runs inside the fresh venv: the public API imports, from the venv, without the heavy libraries.
IMPORT = f'''
import sys, gradual_opt
from gradual_opt import {API}
assert '/site-packages/' in gradual_opt.__file__, gradual_opt.__file__
heavy = [m for m in {HEAVY!r} if m in sys.modules]
assert not heavy, f'import gradual_opt imported {{heavy}}'
import torch, importlib.util
gradual_opt.list_optimizers(); gradual_opt.create_optimizer(torch.nn.Linear(3, 2), 'GSGD', lr=0.1, total_steps=10)
studies = [m for m in sys.modules if m.startswith('gradual_opt.studies')]
assert not studies, f'the registry and the factory imported study code: {{studies}}'
assert importlib.util.find_spec('gradual_opt.studies.experiments'), 'the package lacks gradual_opt.studies'
print(gradual_opt.__version__, gradual_opt.__file__)
'''

# Runs inside the fresh venv: the seconds `import torch` takes, then the seconds the public API adds on top of it.
TIMED = f'''
import time; t0 = time.perf_counter()
import torch; t1 = time.perf_counter()
from gradual_opt import {API}; t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
'''

def import_times(py, cwd, n=5):
    "Best of n fresh processes: the seconds `import torch` takes, and the seconds the public API's import adds to it."
    ts = [tuple(map(float, sh(py, '-c', TIMED, cwd=cwd, capture=True).split())) for _ in range(n)]
    return min(t for t, _ in ts), min(d for _, d in ts)

def shared_torch(overlay):
    """Symlink the running interpreter's torch and every distribution in its requirement closure into `overlay`:
    each distribution's top-level modules and its .dist-info, as listed in its RECORD. Returns the names."""
    import importlib.metadata as md
    names = json.loads(sh(sys.executable, '-c', CLOSURE, capture=True))['torch_closure']
    overlay.mkdir()
    for name in names:
        d = md.distribution(name)
        base = Path(d.locate_file(''))
        tops = {f.parts[0] for f in d.files or [] if f.parts[0] not in ('..', '__pycache__')}
        for t in tops:
            if not (overlay/t).exists(): (overlay/t).symlink_to(base/t)
    return names

def free_gib(p): return shutil.disk_usage(p).free / 2**30

def du_mib(p): return sum(f.stat().st_size for f in Path(p).rglob('*') if f.is_file() and not f.is_symlink()) / 2**20

def main(keep=False, fresh_torch=False):
    t_all = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix='gradual_opt_install_'))
    print(f'{free_gib(tmp):.1f} GiB free in {tmp.parent}; torch: ' +
          ('pip installs a fresh copy' if fresh_torch else 'shared read-only from the running interpreter'), flush=True)
    dist, venv, work = tmp/'dist', tmp/'venv', tmp/'work'; work.mkdir()
    py, pip = venv/'bin'/'python', [venv/'bin'/'python', '-m', 'pip']
    pins = tmp/'torch-pin.txt'   # torch (and torchvision, which fastai needs) at the versions constraints.txt tests
    pins.write_text(''.join(l + '\n' for l in (ROOT/'constraints.txt').read_text().splitlines() if l.startswith(('torch==', 'torchvision=='))))
    env = {**os.environ, 'PYTHONWARNINGS': 'ignore::FutureWarning', 'OMP_NUM_THREADS': '1'}
    env.pop('PYTHONPATH', None)
    try:
        with stage('build sdist + wheel'):
            sh(sys.executable, '-m', 'build', '-o', dist, ROOT, cwd=ROOT)
            whl, = dist.glob('*.whl'); sdist, = dist.glob('*.tar.gz')
            print(f'{whl.name} ({whl.stat().st_size/1024:.0f} KiB), {sdist.name} ({sdist.stat().st_size/1024:.0f} KiB)')
            names = subprocess.run(['tar', 'tzf', sdist], capture_output=True, text=True, check=True).stdout.split()
            for f in ['settings.ini', 'README.md', 'LICENSE', 'CHANGELOG.md', 'setup.py', 'gradual_opt/py.typed']:
                assert f'{sdist.name[:-7]}/{f}' in names, f'{f} is missing from the sdist'

        with stage('fresh venv'):
            sh(getattr(sys, '_base_executable', sys.executable), '-m', 'venv', venv)
            if not fresh_torch:
                shared = shared_torch(tmp/'shared-torch')
                site = Path(sh(py, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])', capture=True).strip())
                (site/'_shared_torch.pth').write_text(f"{tmp/'shared-torch'}\n")
                print(f'torch shared read-only from {sys.prefix}: {len(shared)} distributions ({", ".join(shared)})')
            seed = set(json.loads(sh(py, '-c', CLOSURE, capture=True, cwd=work))['installed'])
            print(f'python {sh(py, "-c", "import sys; print(sys.version.split()[0])", capture=True).strip()}, '
                  f'seeded with {sorted(seed)}')

        with stage('pip install the wheel'):
            sh(*pip, 'install', '-q', '-c', pins, whl, env=env)
            c = json.loads(sh(py, '-c', CLOSURE, capture=True, cwd=work))
            installed, expected = set(c['installed']), set(c['torch_closure']) | {'gradual-opt'}
            extra, missing = installed - expected - seed, expected - installed
            if not fresh_torch:
                assert installed - seed == {'gradual-opt'}, f'next to torch, the wheel installed {sorted(installed - seed)}'
            site = Path(sh(py, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])', capture=True).strip())
            print(f'pip installed {len(installed - seed)} distributions ({", ".join(sorted(installed - seed)[:4])}, ...); '
                  f'torch and its {len(expected) - 2} dependencies are present; venv site-packages {du_mib(site):.0f} MiB')
            assert not extra, f'the wheel installed more than torch and its dependencies: {sorted(extra)}'
            assert not missing, f'missing: {sorted(missing)}'
            meta = json.loads(sh(py, '-c', METADATA, capture=True, cwd=work))
            print(f"metadata: requires {meta['requires'][:1]}+extras {meta['extras']}, license {meta['license']} "
                  f"({meta['license_files']}), {[c for c in meta['classifiers'] if 'Status' in c or 'Python ::' in c]}")
            assert [r for r in meta['requires'] if 'extra ==' not in r] == ['torch>=2.1'], meta['requires']
            assert set(meta['extras']) == {'fastai', 'dev'}, meta['extras']
            assert meta['license'] == 'Apache-2.0' and meta['license_files'] == ['LICENSE'], meta
            assert 'Development Status :: 3 - Alpha' in meta['classifiers'] and meta['version'].startswith('0.'), meta
            assert meta['py_typed'], 'py.typed is not installed'

        with stage('import from the wheel'):
            print(sh(py, '-c', IMPORT, capture=True, cwd=work).strip())
            r = subprocess.run([py, '-c', 'import gradual_opt.fastai'], cwd=work, capture_output=True, text=True)
            assert r.returncode != 0 and 'pip install "gradual_opt[fastai]"' in r.stderr, r.stderr[-2000:]
            print('without fastai: import gradual_opt.fastai says', r.stderr.strip().splitlines()[-1])

        with stage('install the sdist over it and import'):
            sh(*pip, 'install', '-q', '--force-reinstall', '--no-deps', sdist, env=env)
            print(sh(py, '-c', IMPORT, capture=True, cwd=work).strip())
            assert json.loads(sh(py, '-c', METADATA, capture=True, cwd=work))['py_typed'], 'py.typed missing (sdist)'

        with stage('import time (best of 5 processes each)'):
            t_torch, t_added = import_times(py, work)
            print(f'import torch: {t_torch:.2f} s; then from gradual_opt import {API}: +{t_added:.3f} s '
                  f'(at most {MAX_IMPORT_OVERHEAD_S} s)')
            assert t_added <= MAX_IMPORT_OVERHEAD_S, 'gradual_opt adds too much to the import time of torch'

        with stage('pip install "<wheel>[fastai]" with the newest fastai'):
            sh(*pip, 'install', '-q', '-c', pins, f'{whl}[fastai]', 'fastai>=2.8.8', env=env)
            v = json.loads(sh(py, '-c', 'import json, importlib.metadata as m; print(json.dumps({p: m.version(p) for p in '
                              '("fastai", "fastcore", "torch", "torchvision")}))', capture=True, cwd=work))
            n = len(json.loads(sh(py, '-c', CLOSURE, capture=True, cwd=work))['installed'])
            print(f'{v}; {n - len(installed)} more distributions, site-packages {du_mib(site):.0f} MiB')
            assert int(v['fastcore'].split('.')[0]) >= 2, f"expected the newest fastai on fastcore 2, got {v}"

        with stage('fastai smoke test (newest fastai)'):
            print(sh(py, ROOT/'tests'/'fastai_latest_smoke.py', capture=True, cwd=work, env=env).strip())
    finally:
        if keep: print(f'kept {tmp}')
        else: shutil.rmtree(tmp, ignore_errors=True)
    print(f'=== check_install: all ok in {time.perf_counter() - t_all:.0f} s')

if __name__ == '__main__': main(keep='--keep' in sys.argv[1:], fresh_torch='--fresh-torch' in sys.argv[1:])
