"""Every figure grokscope makes, one module per study, each registered in `grokscope.registry.FIGURES`.

```
figures/render.py    the backend policy (matplotlib's OO API, no global backend) and the atomic PNG/GIF saver
figures/spec.py      FigureSpec (name, title, explanation, study, input files, output PNG, make) and
                     write_figures(folder): render what is missing or older than its inputs
figures/progress.py  the progress measures of Nanda et al. (2023) of a modular-arithmetic run
figures/stability.py softmax collapse, NLM cosine, logit norm (Prieto et al. 2025): a run, a sweep
figures/interp.py    probes, lenses, PCA, embedding-space views
figures/interventions.py  patching heatmaps, the discovered circuit, circuit formation over checkpoints
figures/addition.py  accuracy by operand length, loss per answer position, spread over seeds
figures/lengths.py   the length-generalization study's heatmaps and curves
figures/sweeps.py    a sweep's summary column against a swept override
```

Importing this package neither imports pyplot nor touches the matplotlib backend, so notebooks
keep their inline figures: a plot function's returned `Figure` displays itself there.

```python
from grokscope.figures import write_figures
write_figures("runs/tiny")           # every figure whose input files exist, made only if stale
```
"""

from __future__ import annotations

from grokscope.figures import addition, interp, interventions, lengths, progress, stability, sweeps
from grokscope.figures.progress import write_progress_figures
from grokscope.figures.render import figure_png, new_figure, save_gif, save_png
from grokscope.figures.spec import (
    STUDIES,
    FigureInstance,
    FigureSpec,
    WrittenFigure,
    figure_specs,
    register_figure,
    render_figure,
    write_figures,
)

#: the study modules, in STUDIES order (importing them registers their figures)
STUDY_MODULES = (progress, stability, interp, interventions, addition, lengths, sweeps)

__all__ = [
    "STUDIES",
    "STUDY_MODULES",
    "FigureInstance",
    "FigureSpec",
    "WrittenFigure",
    "figure_png",
    "figure_specs",
    "new_figure",
    "register_figure",
    "render_figure",
    "save_gif",
    "save_png",
    "write_figures",
    "write_progress_figures",
]
