"""Draw nbs/images/pipeline.png, the README's overview figure (rerun after changing the pipeline)."""
from pathlib import Path
import matplotlib; matplotlib.use('Agg')
import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch

boxes = [  # (x, y, text, colour)
    (0.02, 0.72, 'GTEx RNA-seq\n(GCT 1.2)', '#4C72B0'), (0.02, 0.45, 'CheXpert\nradiographs', '#DD8452'),
    (0.02, 0.18, 'IXI T1 MRI\n(NIfTI)', '#55A868'),
    (0.22, 0.72, 'VST + ComBat\nMLP encoder', '#4C72B0'), (0.22, 0.45, 'resize, normalise\n2-D CNN', '#DD8452'),
    (0.22, 0.18, 'mask, register\n3-D CNN', '#55A868'),
    (0.42, 0.45, 'VIB latents\n+ InfoNCE\nalignment', '#8172B3'),
    (0.60, 0.45, 'fusion transformer\norgan queries', '#8172B3'),
    (0.78, 0.62, 'Gaussian head\nmu, sigma\nper organ', '#C44E52'),
    (0.78, 0.28, 'calibration, gaps,\nz-scores, statistics,\nattribution', '#937860'),
]
fig, ax = plt.subplots(figsize=(11, 3.6)); ax.set_axis_off()
for x, y, t, c in boxes:
    ax.add_patch(FancyBboxPatch((x, y), 0.16, 0.2, boxstyle='round,pad=0.01', fc=c, ec='none', alpha=0.9))
    ax.text(x+0.08, y+0.1, t, ha='center', va='center', color='white', fontsize=9, weight='bold')
arrow = dict(arrowstyle='->', color='0.3', lw=1.2)
for y in (0.82, 0.55, 0.28): ax.annotate('', (0.22, y), (0.18, y), arrowprops=arrow)
for y in (0.82, 0.55, 0.28): ax.annotate('', (0.42, 0.55), (0.38, y), arrowprops=arrow)
ax.annotate('', (0.60, 0.55), (0.58, 0.55), arrowprops=arrow)
ax.annotate('', (0.78, 0.72), (0.76, 0.58), arrowprops=arrow)
ax.annotate('', (0.86, 0.48), (0.86, 0.62), arrowprops=arrow)
ax.set_xlim(0, 0.96); ax.set_ylim(0.1, 1.0)
ax.set_title('organage: organ-resolved biological age from transcriptomes, radiographs and MRI', fontsize=11)
out = Path(__file__).resolve().parent.parent/'nbs'/'images'/'pipeline.png'
fig.savefig(out, dpi=130, bbox_inches='tight'); print(out)
