"""Mutation score of organage/evaluate/stats.py, organage/evaluate/calibration.py and organage/data/splits.py (issue 18).

Not a benchmark and not part of `make test`: the `_` prefix keeps it out of `make bench`'s loop; run it from a
`make mutation` target. Tool: mutmut 3 (`pip install mutmut`), because it records which tests reach each function and
runs only those tests against that function's mutants, forking from a warm interpreter: with numpy/scipy/numba imports
costing seconds, that is the difference between ~30 minutes and many hours (cosmic-ray restarts the test command per
mutant). Workers fork from mutmut's fork server (`process_isolation = "forkserver"`), not from the process that ran the
clean tests: that process has started numba's parallel threading layer (the `prange` bootstrap kernels), and a worker
forked from it is killed (SIGTERM, exit -15) at its first parallel call: with plain fork, 1,208 of the 2,080 stats.py
mutants ended so, each reported "suspicious". mutmut does not mutate decorated functions, so the numba kernels (`@njit`) are not mutated; their callers are.

mutmut needs a `[tool.mutmut]` section in pyproject.toml and writes a `mutants/` copy of the tree, so the run happens in a
scratch copy (WORK, default reports/bench/mutation_work) holding organage/, the selected test files and a pyproject.toml
of its own: the checkout is not touched. Writes reports/bench/mutation.json (score per module, counts by status, what was
run) and reports/bench/mutation_survivors.csv (module, line, mutant, diff, and the reason from REASONS below when a
survivor was judged equivalent).

Usage: .venv/bin/python bench/_mutation.py [--tests tests/test_stats.py ...] [--jobs 2] [--work DIR] [--out reports/bench]
"""
import argparse, csv, json, os, re, shutil, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULES = ['organage/evaluate/stats.py', 'organage/evaluate/calibration.py', 'organage/data/splits.py']
TESTS = ['tests/test_stats.py', 'tests/test_calibration.py', 'tests/test_splits.py', 'tests/test_mutants_stats.py',
         'tests/test_mutants_calibration.py', 'tests/test_mutants_splits.py', 'tests/test_mutants_stats_tables.py',
         'tests/test_mutants_stats_pairwise.py']

# Survivors judged equivalent (or not worth a test), by mutant name: why the mutant cannot change a result.
REASONS = {}
REASONS_FILE = Path(__file__).with_name('_mutation_equivalent.json')
if REASONS_FILE.exists(): REASONS = json.loads(REASONS_FILE.read_text())


def module_of(name):
    "mutmut names mutants `organage.evaluate.stats.x_func__mutmut_3` (methods: `...xǁClassǁmeth__mutmut_3`)."
    for m in MODULES:
        dotted = m[:-3].replace('/', '.')
        if name.startswith(dotted + '.'): return m
    return '?'


def setup(work, tests):
    if work.exists(): shutil.rmtree(work)
    (work/'tests').mkdir(parents=True)
    shutil.copytree(ROOT/'organage', work/'organage', ignore=shutil.ignore_patterns('__pycache__'))
    for f in ROOT.glob('tests/_*.py'): shutil.copy2(f, work/'tests'/f.name)   # helper modules the tests import
    for t in tests: shutil.copy2(ROOT/t, work/t)
    shutil.copy2(ROOT/'settings.ini', work/'settings.ini')
    q = lambda xs: '[' + ', '.join(json.dumps(x) for x in xs) + ']'
    (work/'pyproject.toml').write_text(f"""[tool.pytest.ini_options]
filterwarnings = ["ignore::DeprecationWarning"]
markers = ["slow: slow", "browser: browser"]

[tool.mutmut]
source_paths = ["organage/"]
only_mutate = {q(MODULES)}
pytest_add_cli_args_test_selection = {q(tests)}
pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-m", "not slow"]
use_git_change_detection = false
process_isolation = "forkserver"
""")


def mutant_diff(work, name):
    r = subprocess.run([str(Path(sys.executable).with_name('mutmut')), 'show', name], cwd=work, capture_output=True, text=True)
    return r.stdout


def changed_line(diff, module):
    "Line number (in the module) and the +/- lines of a mutmut diff."
    src = (ROOT/module).read_text().splitlines()
    minus = [l[1:] for l in diff.splitlines() if l.startswith('-') and not l.startswith('---')]
    plus = [l[1:] for l in diff.splitlines() if l.startswith('+') and not l.startswith('+++')]
    line = next((i + 1 for i, s in enumerate(src) if minus and s == minus[0]), None)
    return line, ' | '.join(s.strip() for s in minus), ' | '.join(s.strip() for s in plus)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--tests', nargs='+', default=[t for t in TESTS if (ROOT/t).exists()])
    p.add_argument('--jobs', type=int, default=2)
    p.add_argument('--work', type=Path, default=ROOT/'reports/bench/mutation_work')
    p.add_argument('--out', type=Path, default=ROOT/'reports/bench')
    p.add_argument('--modules', nargs='+', default=MODULES)
    p.add_argument('--budget', type=float, default=None, help='stop mutmut after this many seconds; unchecked mutants are reported as such')
    p.add_argument('--report-only', action='store_true', help='only read the results already in WORK')
    p.add_argument('--reuse', action='store_true', help='keep WORK (mutmut resumes and reruns only unchecked mutants)')
    a = p.parse_args()
    MODULES[:] = a.modules
    if not (a.reuse or a.report_only) or not a.work.exists(): setup(a.work, a.tests)
    mutmut = str(Path(sys.executable).with_name('mutmut'))
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}   # mutmut puts mutants/ first itself
    t0 = time.time()
    (a.out).mkdir(parents=True, exist_ok=True)
    stopped = 'report only: results of an earlier, interrupted run' if a.report_only else None
    with open(a.out/'mutation_run.log', 'a' if a.report_only else 'w') as log:
      if not a.report_only:
        try:
            r = subprocess.run([mutmut, 'run', '--max-children', str(a.jobs)], cwd=a.work, env=env, stdout=log, stderr=log,
                               timeout=a.budget)
            stopped = None
            if r.returncode != 0: sys.exit(f'mutmut run failed ({r.returncode}); see {a.out/"mutation_run.log"}')
        except subprocess.TimeoutExpired: stopped = f'stopped after the {a.budget:.0f} s budget'
    wall = time.time() - t0
    sys.path.insert(0, str(Path(mutmut).parent))
    from mutmut.stats import status_by_exit_code
    rows, per = [], {m: {} for m in MODULES}
    for meta in (a.work/'mutants').rglob('*.py.meta'):
        for name, code in json.loads(meta.read_text())['exit_code_by_key'].items():
            m, st = module_of(name), status_by_exit_code[code]
            per.setdefault(m, {})[st] = per.setdefault(m, {}).get(st, 0) + 1
            if st not in ('killed', 'timeout', 'caught by type check', 'not checked'):
                d = mutant_diff(a.work, name)
                line, old, new = changed_line(d, m)
                rows.append(dict(module=m, line=line, mutant=name, status=st, original=old, mutated=new,
                                 why=REASONS.get(name, 'equivalent: docstring text' if old[:1] in '"\'' and old else '')))
    score = {}
    for m, c in per.items():
        tot = sum(v for s_, v in c.items() if s_ != 'not checked'); k = c.get('killed', 0) + c.get('timeout', 0)
        score[m] = dict(killed=k, total=tot, score=round(k / tot, 4) if tot else None, by_status=c)
    K = sum(s['killed'] for s in score.values()); T = sum(s['total'] for s in score.values())
    score['all'] = dict(killed=K, total=T, score=round(K / T, 4) if T else None)
    eq = sum(1 for r_ in rows if r_['why'])
    from importlib.metadata import version
    report = dict(tool='mutmut ' + version('mutmut'),
                  modules=MODULES, tests=a.tests, pytest_args=['-m', 'not slow'], jobs=a.jobs, wall_s=round(wall, 1),
                  score=score, survivors=len(rows), survivors_judged_equivalent=eq,
                  score_excluding_equivalent=round(K / (T - eq), 4) if T - eq else None,
                  stopped=stopped, note='not checked mutants are left out of total; killed includes timeouts; mutmut skips decorated (numba @njit) functions')
    tmp = a.out/'mutation.json.tmp'; tmp.write_text(json.dumps(report, indent=2)); tmp.replace(a.out/'mutation.json')
    rows.sort(key=lambda r_: (r_['module'], r_['line'] or 0))
    tmp = a.out/'mutation_survivors.csv.tmp'
    with open(tmp, 'w', newline='') as f:
        w = csv.DictWriter(f, fieldnames=['module', 'line', 'mutant', 'status', 'original', 'mutated', 'why'])
        w.writeheader(); w.writerows(rows)
    tmp.replace(a.out/'mutation_survivors.csv')
    print(json.dumps(report['score'], indent=1)); print(f'{len(rows)} survivors ({eq} judged equivalent); {wall:.0f} s')


if __name__ == '__main__': main()
