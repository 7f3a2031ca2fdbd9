"""Count matrices shared by the expression tests (not a test module: pytest collects only test_*.py)."""
import numpy as np
import pandas as pd
import anndata as ad


def nb_adata(n=80, g=120, seed=0, batches=('b1', 'b2'), tissues=('lung',), batch_sd=0.8,
             balanced=False, # True: tissues and batches assigned in turn (every batch holds every tissue); False: drawn at random
             versioned=False): # True: Ensembl-like ids with a version suffix (ENSG...1 to .7)
    "Negative-binomial-ish counts with gene-specific batch effects and tissue programmes."
    rng = np.random.default_rng(seed)
    mu = np.exp(rng.normal(3.5, 1.2, g))
    if balanced: tis = np.resize(np.asarray(tissues), n); bat = np.resize(np.repeat(np.asarray(batches), 2), n)
    else: tis = rng.choice(tissues, n); bat = rng.choice(batches, n)
    tprog = {t: np.exp(rng.normal(0, 1.0, g)) for t in tissues}
    bprog = {b: np.exp(rng.normal(0, batch_sd, g)) for b in batches}
    lib = np.exp(rng.normal(0, 0.3, n))
    m = mu[None]*np.stack([tprog[t] for t in tis])*np.stack([bprog[b] for b in bat])*lib[:, None]
    X = rng.poisson(m*rng.gamma(10, 0.1, m.shape)).astype(np.float32)
    obs = pd.DataFrame({'batch': bat, 'tissue': tis, 'subject_id': [f"s{i}" for i in range(n)]}, index=[f"c{i}" for i in range(n)])
    ids = [f"ENSG{i:011d}.{i % 7 + 1}" if versioned else f"ENSG{i:011d}" for i in range(g)]
    return ad.AnnData(X, obs=obs, var=pd.DataFrame(index=ids))
