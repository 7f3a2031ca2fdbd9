"""The `organage` console script: fast help, one-line user errors, no heavy imports at start."""
import subprocess, sys
from pathlib import Path
import pytest

BIN = Path(sys.executable).parent/'organage'

def run(*args, **kw):
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=120, **kw)

def test_help_lists_commands_without_heavy_imports():
    r = run('--help')
    assert r.returncode == 0
    for cmd in ('simulate', 'check-data', 'reproduce', 'export', 'predict'): assert cmd in r.stdout
    code = ("import sys, organage.cli as c; c.build_parser().format_help(); "
            "heavy = [m for m in ('torch', 'scanpy', 'monai', 'lightning', 'anndata', 'umap', 'pandas') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == '[]'

@pytest.mark.parametrize('args, expected', [
    (['reproduce', '--profile', 'medium'], "unknown profile 'medium'"),
    (['reproduce', '--data', '/nonexistent/organage-data'], 'data folder not found'),
    (['check-data', '/nonexistent/organage-data'], 'data folder not found'),
    (['reproduce', '--set', 'epochs=many'], "setting 'epochs'"),
    (['reproduce', '--set', 'nonsense=1'], "setting 'nonsense'"),
    (['predict', '--model', '/nonexistent/model', '--data', '/nonexistent/d', '--out', '/nonexistent/o'], 'model folder not found'),
    (['export', '--run', '/nonexistent/run', '--out', '/nonexistent/m'], 'run folder not found'),
])
def test_user_errors_are_one_line(args, expected):
    r = run(*args)
    assert r.returncode != 0
    assert expected in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and 'Traceback' not in r.stderr

def test_unreadable_yaml_and_out_is_a_file(tmp_path):
    bad = tmp_path/'bad.yml'; bad.write_text('epochs: [3\n')
    r = run('reproduce', '--config', str(bad))
    assert r.returncode == 1 and 'not readable as YAML' in r.stderr and str(bad) in r.stderr
    f = tmp_path/'afile'; f.write_text('x')
    for args in (['reproduce', '--out', str(f)], ['simulate', str(f)]):
        r = run(*args)
        assert r.returncode == 1 and 'is a file, expected a folder' in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1

def test_usage_error_exit_2():
    r = run('reproduce', '--device', 'tpu')
    assert r.returncode == 2 and "invalid choice: 'tpu'" in r.stderr and len(r.stderr.strip().splitlines()) == 1
