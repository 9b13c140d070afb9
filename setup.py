# Reads everything from settings.ini (nbdev 2 convention): edit settings there, not here.
from configparser import ConfigParser
import setuptools, shlex

config = ConfigParser(delimiters=['='])
config.read('settings.ini', encoding='utf-8')
cfg = config['DEFAULT']

cfg_keys = 'version description keywords author author_email'.split()
expected = cfg_keys + "lib_name user branch license status min_python audience language".split()
for o in expected: assert o in cfg, "missing expected setting: {}".format(o)
setup_cfg = {o:cfg[o] for o in cfg_keys}

# settings.ini keeps nbdev's license key; the package metadata carries its SPDX expression (PEP 639) and the file.
licenses = {'apache2': 'Apache-2.0'}
statuses = ['1 - Planning', '2 - Pre-Alpha', '3 - Alpha', '4 - Beta', '5 - Production/Stable', '6 - Mature', '7 - Inactive']
# nbdev's template stops at 3.10; we test on 3.11, so the list goes on.
py_versions = '3.10 3.11 3.12 3.13'.split()

def reqs(key): return shlex.split(cfg.get(key) or '')
# Users get torch alone; `fastai` and `dev` are extras (see the comments in settings.ini).
requirements = reqs('requirements')
extras = {'fastai': reqs('fastai_requirements'), 'dev': reqs('dev_requirements')}
min_python = cfg['min_python']

setuptools.setup(
    name = cfg['lib_name'],
    license_expression = licenses.get(cfg['license'].lower(), cfg['license']),   # setuptools>=77; no License classifier with it
    license_files = ['LICENSE'],
    classifiers = [
        'Development Status :: ' + statuses[int(cfg['status']) - 1],
        'Intended Audience :: ' + cfg['audience'],
        'Natural Language :: ' + cfg['language'].title(),
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
        'Typing :: Typed',
    ] + ['Programming Language :: Python :: '+o for o in py_versions[py_versions.index(min_python):]],
    url = cfg['git_url'],
    packages = setuptools.find_packages(include=[cfg['lib_path'], cfg['lib_path']+'.*']),
    include_package_data = True,
    package_data = {cfg['lib_path']: ['py.typed']},   # PEP 561: the package ships its type hints
    install_requires = requirements,
    extras_require = extras,
    python_requires = '>=' + cfg['min_python'],
    long_description = open('README.md', encoding='utf-8').read(),
    long_description_content_type = 'text/markdown',
    zip_safe = False,
    entry_points = {
        'console_scripts': cfg.get('console_scripts','').split(),
        'nbdev': [f'{cfg.get("lib_path")}={cfg.get("lib_path")}._modidx:d']
    },
    **setup_cfg)
