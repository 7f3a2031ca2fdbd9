"A small cohort for the case-control and enrichment tests, from the simulator's parts (no images): a few seconds."
from pathlib import Path
import numpy as np
from organage.core import write_csv
from organage.data.synth import SimConfig, simulate_subjects, simulate_truth, simulate_gtex
from organage.data.methylation import simulate_methylation_files


def _cohort(d: Path, methylation=True, seed=3):
    "A cohort from the simulator's parts (subjects, truth, GTEx, methylation; no images): a few seconds."
    d.mkdir(parents=True)
    cfg = SimConfig(subjects=300, n_genes=600); r = np.random.default_rng(seed)
    s = simulate_subjects(cfg, r); t = simulate_truth(s, cfg, r)
    _, tg = simulate_gtex(s, t, cfg, np.random.default_rng(seed + 1), d)
    write_csv(s[['subject_id', 'group', 'sex', 'age']], d/'subjects.csv'); write_csv(t, d/'truth.csv'); write_csv(tg, d/'truth_genes.csv')
    write_csv(s[['subject_id', 'gtex_id', 'chexpert_id', 'ixi_id']], d/'subject_links.csv')
    if methylation: simulate_methylation_files(d, seed=0, samples_per_tissue=60)
    return d
