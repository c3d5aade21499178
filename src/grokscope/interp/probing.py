"""A probe study of one model: every (hook, position, label column), with the baselines that give it meaning.

- majority: always answering the fit set's most common class;
- embed: the same probe on `hook_embed` at the same position (what the token there says by itself);
- control: the same probe on shuffled labels (same class frequencies) -> selectivity = score - control;
- geometry: cosine between probe directions of two hooks in the same basis (e.g. resid_mid vs
  resid_post), against random directions, and the accuracy of one hook's probe applied to the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from grokscope.errors import GrokscopeError
from grokscope.interp.activations import collect
from grokscope.interp.labels import aligned_positions, control_labels, is_classification, resolve_label
from grokscope.interp.probes import (
    LinearProbes,
    cosine,
    fit_probes,
    majority_accuracy,
    random_cosine_baseline,
)
from grokscope.model import Transformer
from grokscope.tasks import Batch

EMBED = "hook_embed"


@dataclass
class ProbeStudy:
    rows: list[dict] = field(default_factory=list)
    probes: dict[str, LinearProbes] = field(default_factory=dict)
    score_acts: dict[str, torch.Tensor] = field(default_factory=dict)  # hook -> [P, N, D]
    score_labels: torch.Tensor | None = None
    label_names: list[str] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # label columns constant on the fit examples


def probe_model(
    model: Transformer,
    fit: Batch,
    score: Batch,
    hooks: list[str],
    label: str,
    positions: list[int],
    l2: float = 1e-3,
    seed: int = 0,
    baselines: bool = True,
    backend: str = "torch",
    step: int | None = None,
    loss_positions: list[int] | None = None,
) -> ProbeStudy:
    """Fit and score probes for `label` on each hook at each position (plus baselines when asked).

    With the task's `loss_positions`, rows say whether their position is the one whose answer needs
    the label column (`aligned`; tasks with `answer_column` metadata such as addition)."""
    names, y_fit = resolve_label(fit, label)
    _, y_score = resolve_label(score, label)
    regression = not is_classification(y_fit)
    varies = [k for k in range(y_fit.shape[1]) if y_fit[:, k].unique().numel() > 1]
    skipped = [n for k, n in enumerate(names) if k not in varies]
    if not varies:
        raise GrokscopeError(f"label {label!r} takes a single value on the fit examples; nothing to probe")
    names, y_fit, y_score = [names[k] for k in varies], y_fit[:, varies], y_score[:, varies]
    aligned = aligned_positions(fit, names, loss_positions or [])
    want = list(dict.fromkeys([*hooks, EMBED] if baselines else hooks))
    acts_fit = collect(model, fit, want, positions)
    acts_score = collect(model, score, want, positions)
    study = ProbeStudy(score_labels=y_score, label_names=names, positions=positions, skipped=skipped)
    fitted = {}
    for h in want:
        Xf, Xs = acts_fit[h].transpose(0, 1), acts_score[h].transpose(0, 1)  # [P, N, D]
        fitted[h] = fit_probes(Xf, y_fit, l2=l2, regression=regression, backend=backend)
        study.probes[h] = fitted[h]
        study.score_acts[h] = Xs
    scores = {h: fitted[h].score(study.score_acts[h], y_score) for h in want}  # [P, K]
    control = None
    if baselines:
        y_all = control_labels(torch.cat([y_fit, y_score]), seed)
        cf, cs = y_all[: len(y_fit)], y_all[len(y_fit) :]
        control = {
            h: fit_probes(
                acts_fit[h].transpose(0, 1), cf, l2=l2, regression=regression, backend=backend
            ).score(study.score_acts[h], cs)
            for h in hooks
        }
    majority = torch.zeros(len(names)) if regression else majority_accuracy(y_fit, y_score)
    for h in hooks:
        for i, pos in enumerate(positions):
            for k, name in enumerate(names):
                row = {
                    "step": step,
                    "hook": h,
                    "position": pos,
                    "label": name,
                    "metric": "r2" if regression else "acc",
                    "score": scores[h][i, k].item(),
                    "majority": majority[k].item(),
                    "n_fit": len(fit),
                    "n_score": len(score),
                    "n_classes": 0 if regression else len(fitted[h].classes[k]),
                    "aligned": aligned.get(name) == pos if aligned else None,
                }
                if baselines:
                    row["embed"] = scores[EMBED][i, k].item()
                    row["control"] = control[h][i, k].item()
                    row["selectivity"] = row["score"] - row["control"]
                study.rows.append(row)
    return study


def probe_geometry(study: ProbeStudy, hook_a: str, hook_b: str, step: int | None = None) -> list[dict]:
    """Per (position, label column): do two hooks' probes read the same direction, and do they transfer?"""
    pa, pb = study.probes[hook_a], study.probes[hook_b]
    da, db = pa.directions(), pb.directions()  # [P, K, D*C]
    if da.shape != db.shape:
        return []  # hooks of different widths live in different bases
    cos = cosine(da, db)
    d_model = pa.W.shape[2]
    rand_mean, rand_p99 = random_cosine_baseline(d_model)
    y = study.score_labels
    a_on_b = pa.score(study.score_acts[hook_b], y)
    b_on_a = pb.score(study.score_acts[hook_a], y)
    own_a = pa.score(study.score_acts[hook_a], y)
    own_b = pb.score(study.score_acts[hook_b], y)
    rows = []
    for i, pos in enumerate(study.positions):
        for k, name in enumerate(study.label_names):
            rows.append(
                {
                    "step": step,
                    "hook_a": hook_a,
                    "hook_b": hook_b,
                    "position": pos,
                    "label": name,
                    "cosine": cos[i, k].item(),
                    "random_abs_cos_mean": rand_mean,
                    "random_abs_cos_p99": rand_p99,
                    "score_a": own_a[i, k].item(),
                    "score_b": own_b[i, k].item(),
                    "a_probe_on_b": a_on_b[i, k].item(),
                    "b_probe_on_a": b_on_a[i, k].item(),
                }
            )
    return rows


def summary_rows(rows: list[dict]) -> tuple[list[dict], str]:
    """The rows worth showing, and how they were chosen: each label column at its aligned position
    when the task defines one (rows read back from CSV hold the string 'True'), else at its best."""
    aligned = [r for r in rows if r.get("aligned") in (True, "True")]
    if aligned:
        return aligned, "each label column at the position whose answer needs it"
    best: dict[tuple, dict] = {}
    for r in rows:
        key = (r["hook"], r["label"])
        if key not in best or r["score"] > best[key]["score"]:
            best[key] = r
    many = len({r["position"] for r in rows}) > 1
    return list(best.values()), "best position per row" if many else "one position"
