"""`organage reproduce` on tiny stand-in paper notebooks: the bars a user watches on the terminal, and a failing
notebook that names itself while the notebooks before it keep their outputs (the slow cells of nbs/02_reproduce.ipynb)."""
import json, os, shutil, subprocess, sys, tempfile
from pathlib import Path
import nbformat

BIN = Path(sys.executable).parent/'organage'
ROOT = Path(__file__).resolve().parent.parent
PARAMETERS = "profile = 'quick'\ndata_dir = None\nrun_dir = None\nseed = 0\ndevice = 'auto'\nn_bootstrap = 100\nconfig = {}"


def notebooks(folder, tags=(), **sources):
    "Write one notebook per keyword (name -> code of its second cell) after a `parameters` cell with `tags`."
    folder.mkdir(parents=True, exist_ok=True)
    for name, src in sources.items():
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(PARAMETERS, metadata={'tags': ['parameters', *tags]}),
                                             nbformat.v4.new_code_cell(src)])
        nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'python3', 'language': 'python'}
        nbformat.write(nb, folder/f'{name}.ipynb')
    return folder


def reproduce(tmp_path, *extra):
    (tmp_path/'data').mkdir(exist_ok=True)
    # relative folders, as users type them (papermill changes the working folder while a notebook runs)
    return subprocess.run([str(BIN), 'reproduce', '--notebooks', 'nbs', '--data', 'data', '--out', 'out', *extra],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)


STEPS = """import time
from organage.core import progress
for i in progress(range(8), desc='long step', unit='batch'):
    time.sleep(0.25)
print('done', seed)"""


def test_terminal_shows_notebooks_cells_and_the_long_step_inside(tmp_path):
    notebooks(tmp_path/'nbs', a_first=STEPS, b_second='print(seed + 1)')
    r = reproduce(tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'paper notebooks' in r.stderr and '2/2' in r.stderr          # bar over notebooks
    assert 'a_first' in r.stderr                                         # bar over the running notebook's cells
    assert 'long step' in r.stderr and 'batch' in r.stderr               # the kernel's own bar, relayed
    ran = nbformat.read(tmp_path/'out'/'quick'/'notebooks'/'a_first.ipynb', 4)
    outs = [o for c in ran.cells if c.cell_type == 'code' for o in c.get('outputs', [])]
    assert [o.get('text') for o in outs] == ['done 0\n']                 # no bar bloats the executed notebook
    assert not (tmp_path/'out'/'quick'/'notebooks'/'.progress.jsonl').exists()


def test_no_progress_draws_no_bars(tmp_path):
    notebooks(tmp_path/'nbs', a_first=STEPS)
    r = reproduce(tmp_path, '--no-progress')
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'long step' not in r.stderr and 'paper notebooks' not in r.stderr
    ran = nbformat.read(tmp_path/'out'/'quick'/'notebooks'/'a_first.ipynb', 4)
    assert [o.get('text') for c in ran.cells if c.cell_type == 'code' for o in c.get('outputs', [])] == ['done 0\n']


def test_failing_notebook_names_itself_and_keeps_earlier_outputs(tmp_path):
    notebooks(tmp_path/'nbs', **{'01_ok': 'print(seed)', '02_bad': "raise ValueError('boom')", '03_after': 'print(1)'})
    r = reproduce(tmp_path, '--no-progress')
    assert r.returncode == 1
    assert "notebook 02_bad.ipynb failed in cell" in r.stderr and "ValueError: boom" in r.stderr
    assert 'Traceback' not in r.stderr and 'Passed unknown parameter' not in r.stderr and 'WARNING' not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith('organage: error: notebook 02_bad.ipynb')
    out = tmp_path/'out'/'quick'
    assert sorted(p.name for p in (out/'notebooks').glob('*.ipynb')) == ['01_ok.ipynb', '02_bad.failed.ipynb']
    m = json.loads((out/'manifest.json').read_text())
    assert 'notebook:01_ok' in m['timings'] and 'notebooks/01_ok.ipynb' in m['outputs']


def test_simulated_only_notebook_is_skipped_on_real_data(tmp_path):
    "A notebook tagged `needs-simulated-cohort` is skipped, said and recorded when the data has no truth.csv."
    notebooks(tmp_path/'nbs', a_first='print(seed)')
    notebooks(tmp_path/'nbs', tags=['needs-simulated-cohort'], b_truth="raise RuntimeError('must not run')")
    r = reproduce(tmp_path, '--no-progress')
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'skipped b_truth.ipynb: needs a simulated cohort' in r.stdout
    out = tmp_path/'out'/'quick'
    assert sorted(p.name for p in (out/'notebooks').glob('*.ipynb')) == ['a_first.ipynb']
    m = json.loads((out/'manifest.json').read_text())
    assert m['skipped']['notebook:b_truth'].startswith('needs a simulated cohort') and 'notebook:b_truth' not in m['timings']
    (tmp_path/'data'/'truth.csv').write_text('subject_id,organ\n')       # a simulated cohort: it runs (and fails here)
    r = reproduce(tmp_path, '--no-progress')
    assert r.returncode == 1 and 'must not run' in r.stderr


FINDS = """from pathlib import Path
print((Path(data_dir)/'cohort.txt').read_text())
(Path(run_dir)/'tables').mkdir(exist_ok=True)
n = (Path(run_dir)/'tables'/'seen.csv').write_text('x\\n1\\n')"""


def test_injected_parameters_show_no_folder_of_the_checkout(tmp_path):
    """Pages show each executed notebook's injected-parameters cell: run inside the checkout (as `make reproduce`
    writes reports/<profile>), the folders there appear relative to the executed notebook, which still finds them."""
    work = Path(tempfile.mkdtemp(prefix='test-params-', dir=ROOT/'reports'))   # reports/* is ignored by git
    try:
        notebooks(work/'nbs', a_first=FINDS)
        (work/'data').mkdir(); (work/'data'/'cohort.txt').write_text('the cohort')
        r = reproduce(work, '--no-progress')
        assert r.returncode == 0, r.stderr[-2000:]
        out = work/'out'/'quick'
        ran = nbformat.read(out/'notebooks'/'a_first.ipynb', 4)
        injected = [c for c in ran.cells if 'injected-parameters' in c.metadata.get('tags', [])]
        assert len(injected) == 1
        src = injected[0].source
        assert str(ROOT) not in src and str(ROOT.resolve()) not in src and str(work) not in src, src
        ns = {}; exec(src, ns)
        assert ns['data_dir'] == os.path.join('..', '..', '..', 'data') and ns['run_dir'] == '..'
        assert [o.get('text') for c in ran.cells if c.cell_type == 'code' for o in c.get('outputs', [])] == ['the cohort\n']
        assert (out/'tables'/'seen.csv').read_text() == 'x\n1\n'
        assert 'tables/seen.csv' in json.loads((out/'manifest.json').read_text())['outputs']
    finally: shutil.rmtree(work)


def test_a_notebook_runs_in_its_folder_without_moving_the_process(tmp_path):
    "Two lanes run notebooks from two threads of one process: the kernel starts in the output folder, and the process's own working folder never moves (papermill's cwd= os.chdir()s the process for the whole run, and the lanes restored each other's folder)."
    import threading, time
    from organage.reproduce import run_notebook
    src = notebooks(tmp_path/'src', w="import os, time, pathlib\npathlib.Path('cwd.txt').write_text(os.getcwd())\ntime.sleep(2)")
    out = tmp_path/'out'
    before, seen, errors = os.getcwd(), set(), []
    def run():
        try: run_notebook(src/'w.ipynb', out, {})
        except Exception as e: errors.append(e)
    t = threading.Thread(target=run); t.start()
    while t.is_alive(): seen.add(os.getcwd()); time.sleep(0.05)
    assert not errors and seen == {before}
    assert (out/'cwd.txt').read_text() == str(out.resolve()) and (out/'w.ipynb').is_file()
