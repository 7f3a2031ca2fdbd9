"""Write README.md from nbs/index.ipynb (nbdev_readme needs Quarto, which cannot be installed here).
Markdown cells are joined; image paths are made relative to the repository root; `#| hide` cells skipped."""
import sys
from pathlib import Path
import nbformat

ROOT = Path(__file__).resolve().parent.parent

def render() -> str:
    nb = nbformat.read(ROOT/'nbs'/'index.ipynb', as_version=4)
    parts = []
    for c in nb.cells:
        if c.cell_type != 'markdown' or c.source.startswith('#| hide'): continue
        parts.append(c.source.replace('](images/', '](nbs/images/'))
    head = '<!-- generated from nbs/index.ipynb by docs/readme.py: edit the notebook, not this file -->\n\n'
    return head + '\n\n'.join(parts) + '\n'

if __name__ == '__main__':
    out = ROOT/'README.md'
    text = render()
    if '--check' in sys.argv:
        if out.read_text() != text: sys.exit('README.md is out of date: run `make export` (docs/readme.py) and commit')
    else: out.write_text(text)
