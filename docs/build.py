"""Build the organage documentation site offline into _docs/.

1. nbdev processes the library notebooks (its `proc_nbs` applies `#| hide`, `show_doc`, ...) into _proc/.
   We call the function rather than `nbdev_proc_nbs`, whose command first tries to install Quarto.
2. The executed paper notebooks of reports/<profile>/notebooks replace their output-free sources, so the
   site shows the figures of the last `organage reproduce` (run `make reproduce` first).
3. Sphinx + myst-nb render the pages (no execution at build time).
Users who have Quarto can keep using `nbdev_docs` instead."""
import os, shutil, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

def toctree(caption, entries):
    body = '\n'.join(entries)
    return f":::{{toctree}}\n:caption: {caption}\n:maxdepth: 1\n\n{body}\n:::\n"

def main(reports=None, out=None):
    """Build the site from the executed notebooks under `reports` (default reports/$PROFILE/notebooks)
    into `out` (default _docs/)."""
    os.chdir(ROOT)
    from nbdev.serve import proc_nbs
    proc = Path(proc_nbs(force=True, n_workers=0))
    reports = Path(reports) if reports else ROOT/'reports'/os.environ.get('PROFILE', 'quick')/'notebooks'
    paper = sorted(p.name for p in (ROOT/'nbs'/'paper').glob('*.ipynb') if not p.name.startswith(('_', '.')))
    for name in paper:
        executed = reports/name
        if executed.exists(): shutil.copy2(executed, proc/'paper'/name)
        else: print(f"note: {executed} not found; the site shows the unexecuted paper notebook (run `make reproduce`)")
    shutil.copy2(ROOT/'docs'/'conf.py', proc/'conf.py')
    lib = sorted(str(p.relative_to(proc).with_suffix('')) for p in proc.rglob('*.ipynb')
                 if p.parent.name != 'paper' and p.stem != 'index')
    idx = proc/'index.ipynb'
    import nbformat
    nb = nbformat.read(idx, as_version=4)
    nb.cells.append(nbformat.v4.new_markdown_cell(
        toctree('The paper, reproduced', [f'paper/{Path(n).stem}' for n in paper]) + '\n' + toctree('Library', lib)))
    nbformat.write(nb, idx)
    out = Path(out) if out else ROOT/'_docs'
    r = subprocess.run([sys.executable, '-m', 'sphinx', '-b', 'html', '-q', str(proc), str(out)])
    if r.returncode: sys.exit(r.returncode)
    print(f"site written to {out}/index.html")

if __name__ == '__main__':
    import argparse
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--reports', default=None, help='folder of executed paper notebooks (default reports/$PROFILE/notebooks)')
    p.add_argument('--out', default=None, help='site folder (default _docs)')
    a = p.parse_args(); main(a.reports, a.out)
