"""The GCT reader's two number parsers (issue 17): pyarrow's multithreaded CSV parser (the default) and numpy's
loadtxt (`engine='numpy'`, the reference) must give bit-identical matrices on the same file, plain or gzipped, with
any sample/gene selection and batch size, and the same errors (file, line, column, sample) wherever in a big file the
bad row is. Batches are parsed by a worker thread while the next one is read: an error in an earlier batch must
still be the one reported."""
import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import organage.data.gtex as gtex
from organage.core import DataError
from organage.data.gtex import read_gct, read_gct_header, read_gtex

pytest.importorskip('pyarrow')


def gct_text(X, fmt='{:g}', samples=None, names=None):
    g, s = X.shape
    samples = samples or [f'GTEX-{j // 3:04X}-{j:04d}-SM-{j:05d}' for j in range(s)]
    names = names or [f'ENSG{i:011d}.{i % 5 + 1}' for i in range(g)]
    lines = ['#1.2', f'{g}\t{s}', '\t'.join(['Name', 'Description'] + samples)]
    lines += ['\t'.join([n, f'GENE{i}'] + [fmt.format(v) for v in row]) for i, (n, row) in enumerate(zip(names, X))]
    return '\n'.join(lines) + '\n'


def write(p, text, gz=False):
    data = text.encode()
    Path(p).write_bytes(gzip.compress(data, compresslevel=1) if gz else data)
    return Path(p)


def both(p, **kw):
    a, b = read_gct(p, engine='pyarrow', **kw), read_gct(p, engine='numpy', **kw)
    return a, b


def assert_same(a, b):
    "Bit-identical values, same dtype, orientation, names."
    assert a.X.dtype == b.X.dtype == np.float32 and a.X.shape == b.X.shape
    assert a.X.flags.f_contiguous and b.X.flags.f_contiguous  # samples x genes view of a genes x samples buffer
    assert a.X.tobytes() == b.X.tobytes()
    assert list(a.obs_names) == list(b.obs_names) and list(a.var_names) == list(b.var_names)
    assert a.var.symbol.tolist() == b.var.symbol.tolist() and a.uns == b.uns


@pytest.fixture(scope='module')
def big(tmp_path_factory):
    "3,000 genes x 60 samples, TPM-like values with 9 significant digits (float32 rounding is where parsers differ)."
    rng = np.random.default_rng(17)
    X = rng.gamma(0.5, 40.0, size=(3000, 60)) * (rng.random((3000, 60)) > 0.3)
    d = tmp_path_factory.mktemp('gct')
    text = gct_text(X, fmt='{:.9g}')
    return X, write(d/'big.gct', text), write(d/'big.gct.gz', text, gz=True)


@pytest.mark.parametrize('gz', [False, True])
@pytest.mark.parametrize('chunksize', [None, 1, 7, 250])
def test_fast_path_equals_loadtxt(big, gz, chunksize):
    X, plain, zipped = big
    p = zipped if gz else plain
    a, b = both(p, chunksize=chunksize)
    assert_same(a, b)
    dec = np.vectorize(lambda v: float(f'{v:.9g}'))(X)  # the decimal text, rounded to float64, then to float32
    np.testing.assert_array_equal(a.X, dec.T.astype(np.float32))
    hdr = read_gct_header(p)
    rng = np.random.default_rng(chunksize or 0)
    samples = list(rng.choice(hdr.samples, 17, replace=False))
    names = [f'ENSG{i:011d}' for i in sorted(rng.choice(3000, 400, replace=False))]  # unversioned ids match
    a, b = both(p, samples=samples, genes=names, chunksize=chunksize)
    assert_same(a, b)
    cs = sorted(hdr.samples.index(s) for s in samples)
    rs = [int(n[4:]) for n in names]
    np.testing.assert_array_equal(a.X, dec[np.ix_(rs, cs)].T.astype(np.float32))


def test_default_engine_is_pyarrow(big, monkeypatch):
    X, plain, _ = big
    calls = []
    orig = gtex._ArrowBatches.parse
    def spy(self, lines):
        r = orig(self, lines); calls.append(len(lines) if r is not None else -len(lines)); return r
    monkeypatch.setattr(gtex._ArrowBatches, 'parse', spy)
    read_gct(plain)
    assert sum(calls) == 3000 and min(calls) > 0  # every data row parsed by pyarrow (a refused batch, None, would count negative)
    calls.clear(); read_gct(plain, engine='numpy')
    assert calls == []


def test_refused_batches_fall_back_to_loadtxt(big, monkeypatch):
    "A batch pyarrow refuses is re-read by loadtxt: here every other batch is refused, the matrix is the same."
    X, plain, zipped = big
    ref = read_gct(plain, engine='numpy', chunksize=100)
    seen, orig = [], gtex._ArrowBatches.parse
    def every_other(self, lines):
        seen.append(len(lines)); return None if len(seen) % 2 else orig(self, lines)
    monkeypatch.setattr(gtex._ArrowBatches, 'parse', every_other)
    assert_same(read_gct(zipped, engine='pyarrow', chunksize=100), read_gct(zipped, engine='numpy', chunksize=100))
    assert_same(read_gct(plain, engine='pyarrow', chunksize=100), ref)
    assert len(seen) > 10


@pytest.mark.parametrize('engine', ['pyarrow', 'numpy'])
def test_bare_carriage_return(tmp_path, engine):
    "A bare CR inside a row splits it for both parsers: the same error, naming the batch's lines."
    text = gct_text(np.arange(40.).reshape(8, 5)).replace('\t7\t', '\t7\r\t')
    with pytest.raises(DataError, match=r'cr.gct: lines 4-11: expression values could not be parsed \(expected numbers; found .*newline'):
        read_gct(write(tmp_path/'cr.gct', text), engine=engine)


def test_without_pyarrow(big, monkeypatch):
    X, plain, _ = big
    ref = read_gct(plain, engine='pyarrow')
    monkeypatch.setattr(gtex, '_pyarrow_csv', lambda: None)
    assert_same(read_gct(plain), ref)  # 'auto' falls back to loadtxt
    with pytest.raises(ImportError, match=r"engine='pyarrow' needs the pyarrow package"):
        read_gct(plain, engine='pyarrow')
    with pytest.raises(ValueError, match=r"engine must be one of auto, pyarrow, numpy; got 'polars'"):
        read_gct(plain, engine='polars')


@pytest.mark.parametrize('engine', ['pyarrow', 'numpy'])
@pytest.mark.parametrize('gz', [False, True])
def test_bad_value_mid_file_names_its_line(tmp_path, engine, gz):
    "A malformed value at gene row 1,733 of 3,000 (many batches in): line, column, gene and sample are named."
    X = np.random.default_rng(1).integers(0, 500, (3000, 40)).astype(float)
    lines = gct_text(X).split('\n')
    f = lines[3 + 1732].split('\t'); f[2 + 29] = '12,5'; lines[3 + 1732] = '\t'.join(f)
    p = write(tmp_path/('mid.gct.gz' if gz else 'mid.gct'), '\n'.join(lines), gz=gz)
    with pytest.raises(DataError, match=r"mid.gct(.gz)?: line 1736, column 32 \(gene ENSG00000001732.3, sample GTEX-0009-0029-SM-00029\): "
                                        r"non-numeric expression value \(expected a number; found '12,5'\)"):
        read_gct(p, engine=engine, chunksize=50)
    # a selection that leaves the column out never parses it
    hdr = read_gct_header(p)
    a = read_gct(p, samples=hdr.samples[:29], engine=engine)
    np.testing.assert_array_equal(a.X, X[:, :29].T)
    neg = write(tmp_path/'neg.gct', '\n'.join(lines).replace('\t12,5\t', '\tnan\t'))
    with pytest.raises(DataError, match=r'neg.gct: line 1736, column 32 \(sample GTEX-0009-0029-SM-00029\): expression value is not a finite '
                                        r'non-negative number \(expected a count or TPM >= 0; found nan\)'):
        read_gct(neg, engine=engine)


@pytest.mark.parametrize('engine', ['pyarrow', 'numpy'])
def test_first_error_in_file_order_wins(tmp_path, engine):
    "Batches overlap with reading: a bad value in an earlier batch is reported before a broken row in a later one, and vice versa."
    X = np.random.default_rng(2).integers(0, 500, (2000, 20)).astype(float)
    lines = gct_text(X).split('\n')
    def bad_value(ls, row): f = ls[3 + row].split('\t'); f[5] = 'x'; ls[3 + row] = '\t'.join(f)
    early = list(lines); bad_value(early, 100); early[3 + 1900] = early[3 + 1900].rsplit('\t', 1)[0]   # short row later
    with pytest.raises(DataError, match=r'early.gct: line 104, column 6 .*non-numeric expression value'):
        read_gct(write(tmp_path/'early.gct', '\n'.join(early)), engine=engine, chunksize=40)
    late = list(lines); bad_value(late, 1900); late[3 + 100] = late[3 + 100].rsplit('\t', 1)[0]
    with pytest.raises(DataError, match=r'late.gct: line 104: data row has the wrong number of fields \(expected 22 tab-separated'):
        read_gct(write(tmp_path/'late.gct', '\n'.join(late)), engine=engine, chunksize=40)
    # a value error in the last batch still comes before the end-of-file row count check
    short = lines[:3 + 1999] + ['']; bad_value(short, 1998)
    with pytest.raises(DataError, match=r'short.gct: line 2002, column 6 .*non-numeric'):
        read_gct(write(tmp_path/'short.gct', '\n'.join(short)), engine=engine, chunksize=40)


def test_read_gtex_engines_agree(tmp_path):
    "read_gtex over two GCT files (the v10 per-tissue layout), organ selection, both parsers: the same AnnData."
    rng = np.random.default_rng(3)
    donors = [f'GTEX-{1000 + i:X}' for i in range(6)]
    s1 = [f'{d}-0001-SM-A{i}' for i, d in enumerate(donors)]
    s2 = [f'{d}-0002-SM-B{i}' for i, d in enumerate(donors)]
    X1, X2 = rng.integers(0, 900, (500, 6)).astype(float), rng.integers(0, 900, (500, 6)).astype(float)
    write(tmp_path/'GTEx_v10_lung_gene_reads.gct', gct_text(X1, samples=s1))
    write(tmp_path/'GTEx_v10_liver_gene_reads.gct.gz', gct_text(X2, samples=s2), gz=True)
    pd.DataFrame({'SAMPID': s1 + s2, 'SMTSD': ['Lung'] * 6 + ['Liver'] * 6, 'SMGEBTCH': 'B1'}).to_csv(
        tmp_path/'GTEx_Annotations_SampleAttributesDS.txt', sep='\t', index=False)
    pd.DataFrame({'SUBJID': donors, 'SEX': [1, 2] * 3, 'AGE': ['20-29', '30-39', '40-49', '50-59', '60-69', '70-79']}).to_csv(
        tmp_path/'GTEx_Annotations_SubjectPhenotypesDS.txt', sep='\t', index=False)
    for kw in [{}, dict(organs='liver'), dict(genes=['ENSG00000000007', 'ENSG00000000400.1'], chunksize=3)]:
        a, b = read_gtex(tmp_path, engine='pyarrow', **kw), read_gtex(tmp_path, engine='numpy', **kw)
        assert a.X.tobytes() == b.X.tobytes() and a.X.dtype == np.float32 and a.X.flags.f_contiguous
        pd.testing.assert_frame_equal(a.obs, b.obs); assert a.uns == b.uns
    a = read_gtex(tmp_path)
    order = [a.obs_names.get_loc(s) for s in s1 + s2]
    np.testing.assert_array_equal(a.X[order], np.hstack([X1, X2]).T)
