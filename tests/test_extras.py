"`organage simulate` writes every imaging system on the same persons, and `organage check-data` reports each of them, bad files named."
import subprocess, sys
from pathlib import Path
import pandas as pd
import pytest
from organage.cli import main
from organage.data.synth import simulate_cohort, ALL_EXTRAS
from organage.core import ConfigError

SMALL = ['--set', 'image_size=32', '--set', 'volume_size=16', '--set', 'n_genes=200']


@pytest.fixture(scope='module')
def cohort(tmp_path_factory):
    d = tmp_path_factory.mktemp('extras')/'sim'
    assert main(['simulate', str(d), '--subjects', '120', '--seed', '4', *SMALL]) == 0
    return d


def test_simulate_writes_every_extra_on_the_cohorts_persons(cohort):
    persons = set(pd.read_csv(cohort/'subjects.csv', dtype=str).subject_id)
    assert set(ALL_EXTRAS) >= {'msk_sites', 'methylation'}
    msk = pd.read_csv(cohort/'msk'/'subject_links.csv', dtype=str)
    sheet = pd.read_csv(cohort/'methylation'/'sample_sheet.csv', dtype=str)
    assert len(msk) and set(msk.subject_id) <= persons
    subj = [c for c in sheet.columns if 'subject' in c.lower()][0]
    assert len(sheet) and set(sheet[subj]) <= persons


def test_check_data_reports_the_extras_and_names_a_bad_file(cohort, tmp_path, capsys):
    import shutil
    d = tmp_path/'c'; shutil.copytree(cohort, d)
    bad = sorted((d/'msk').rglob('*.jpg'))[0]
    bad.write_bytes(b'not a jpeg')
    rc = main(['check-data', str(d), '--full'])
    out = capsys.readouterr().out
    assert '== msk_sites (msk/)' in out and '== methylation (methylation/)' in out
    assert bad.name in out and 'problems: 0 fatal' in out and rc == 0   # one unreadable image: a warning, not the end of the run


def test_unknown_extra_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="unknown.*'wholebody_x'"):
        simulate_cohort(tmp_path/'x', subjects=20, n_genes=200, image_size=16, volume_size=16, extras=('wholebody_x',))
