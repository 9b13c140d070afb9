"""Write README.md from nbs/index.ipynb without quarto (nbdev_readme needs quarto, which cannot be installed here).

`python tools/make_readme.py` writes README.md; `python tools/make_readme.py --check` exits 1 if README.md is stale.
Markdown cells are copied; code cells become ```python blocks followed by their text output; cells flagged
`#|hide` (or that only carry nbdev directives such as `#|default_exp`) are left out, as nbdev would; `#|echo: false`
leaves the code out and `#|output: asis` copies the output as Markdown (the README's tables come from the registry).
"""
import json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIRECTIVE = re.compile(r'^\s*#\s*\|')

def render(nb_path):
    nb = json.loads(Path(nb_path).read_text(encoding='utf-8'))
    out = ['<!-- Generated from nbs/index.ipynb by tools/make_readme.py: edit the notebook, not this file. -->', '']
    for c in nb['cells']:
        src = ''.join(c['source'])
        lines = src.split('\n')
        flags = [l for l in lines if DIRECTIVE.match(l)]
        if any(re.search(r'\|\s*(hide|export|exporti|default_exp)\b', f) for f in flags): continue
        body = '\n'.join(l for l in lines if not DIRECTIVE.match(l)).strip('\n')
        if not body.strip(): continue
        if c['cell_type'] == 'markdown': out += [body, '']
        elif c['cell_type'] == 'code':
            echo = not any(re.search(r'\|\s*echo:\s*false', f) for f in flags)       # quarto's `#|echo: false`: output only
            asis = any(re.search(r'\|\s*output:\s*asis', f) for f in flags)         # `#|output: asis`: the output is Markdown
            if echo: out += ['```python', body, '```', '']
            text = []
            for o in c.get('outputs', []):
                if o.get('output_type') == 'stream' and o.get('name') != 'stderr': text.append(''.join(o['text']))
                elif 'data' in o and 'text/plain' in o['data'] and 'text/html' not in o['data']:
                    text.append(''.join(o['data']['text/plain']))
            text = ''.join(t if t.endswith('\n') else t + '\n' for t in text).rstrip('\n')
            if text: out += [text, ''] if asis else ['```', text, '```', '']
    return '\n'.join(out).rstrip('\n') + '\n'

if __name__ == '__main__':
    text = render(ROOT/'nbs'/'index.ipynb')
    readme = ROOT/'README.md'
    if '--check' in sys.argv:
        if not readme.exists() or readme.read_text(encoding='utf-8') != text:
            sys.exit('README.md is out of date with nbs/index.ipynb: run `make readme` (python tools/make_readme.py).')
        print('README.md is in sync with nbs/index.ipynb')
    else:
        readme.write_text(text, encoding='utf-8'); print(f'wrote {readme}')
