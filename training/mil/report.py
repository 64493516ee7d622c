"""Results as JSON, a Markdown table comparing encoders side by side, and ROC curves (PNG)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: never needs a display
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import roc_curve

from .protocols import Evaluation

Results = Mapping[str, Sequence[Evaluation]]  # encoder name -> one evaluation per MIL model


def evaluation_record(evaluation: Evaluation, class_names: Sequence[str]) -> dict:
    """Everything about one evaluation that fits in JSON (models excluded)."""
    probs = evaluation.probs
    return {
        "model": evaluation.model,
        "protocol": evaluation.protocol,
        "seconds": round(evaluation.seconds, 2),
        "summary": evaluation.summary,
        "per_repeat": evaluation.per_repeat,
        "repeat_probs": np.asarray(evaluation.repeat_probs).tolist(),
        "predictions": [
            {
                "slide_id": slide_id,
                "label": class_names[int(label)],
                "prob": p.tolist() if np.ndim(p) else float(p),
            }
            for slide_id, label, p in zip(
                evaluation.slide_ids, evaluation.labels, probs, strict=True
            )
        ],
    }


def write_json(results: Results, class_names: Sequence[str], path: str | Path) -> Path:
    """Write ``{encoder: {model: record}}`` with the class names; returns the path."""
    payload = {
        "class_names": list(class_names),
        "encoders": {
            encoder: {ev.model: evaluation_record(ev, class_names) for ev in evaluations}
            for encoder, evaluations in results.items()
        },
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=_json_default))
    return path


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"Cannot write {type(value).__name__} to JSON")


METRIC_TITLES = {"auc": "Slide-level AUC", "balanced_accuracy": "Balanced accuracy"}


def _mean_std(summary: Mapping, metric: str) -> str:
    return f"{summary[f'{metric}_mean']:.3f} ± {summary[f'{metric}_std']:.3f}"


def _interval(low: float, high: float) -> str:
    return f"{low:.3f}–{high:.3f}"


def markdown_table(results: Results, metric: str = "auc") -> str:
    """One row per MIL model, one column per encoder: mean ± std over repeats (seeds) only."""
    encoders = list(results)
    models = list(dict.fromkeys(ev.model for evs in results.values() for ev in evs))
    by_key = {(enc, ev.model): ev for enc, evs in results.items() for ev in evs}
    protocol = next(ev.protocol for evs in results.values() for ev in evs)
    lines = [
        f"| model ({protocol}) | " + " | ".join(encoders) + " |",
        "|---" * (len(encoders) + 1) + "|",
    ]
    for model in models:
        cells = [
            _mean_std(by_key[(enc, model)].summary, metric) if (enc, model) in by_key else "–"
            for enc in encoders
        ]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def details_table(results: Results, metric: str = "auc") -> str:
    """One row per (encoder, model): each figure in its own labelled column."""
    lines = [
        "| encoder | model | repeats | mean ± std over seeds | 95% CI of the mean (bootstrap) "
        "| seed-ensemble value | seed-ensemble 95% CI (bootstrap) |",
        "|---|---|---|---|---|---|---|",
    ]
    for encoder, evaluations in results.items():
        for ev in evaluations:
            summary = ev.summary
            mean_ci = summary[f"{metric}_mean_ci"]
            ensemble = summary["seed_ensemble"][metric]
            cells = [
                encoder,
                ev.model,
                str(summary["repeats"]),
                _mean_std(summary, metric),
                _interval(mean_ci["low"], mean_ci["high"]),
                f"{ensemble['value']:.3f}",
                _interval(ensemble["low"], ensemble["high"]),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


HOW_TO_READ = (
    "How to read: *mean ± std over seeds* is the mean of each repeat's own test metric and its "
    "sample standard deviation; *95% CI of the mean* is a percentile bootstrap over test slides "
    "(1,000 resamples, every repeat scored on the same resample); the *seed ensemble* averages "
    "the repeats' probabilities per slide and is scored once, with its own bootstrap interval. "
    "Models and settings were selected on validation slides only.\n"
)


def write_markdown(results: Results, path: str | Path) -> Path:
    """Write, per metric, the encoder comparison and the detailed table, and how to read them."""
    parts = []
    for metric, title in METRIC_TITLES.items():
        parts += [
            f"## {title}\n\nMean ± std over seeds:\n\n",
            markdown_table(results, metric),
            "\nIntervals and seed ensemble:\n\n",
            details_table(results, metric),
            "\n",
        ]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(parts) + HOW_TO_READ)
    return path


def roc_points(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Binary: the ROC curve. Multi-class: the macro average of one-vs-rest curves."""
    if np.ndim(probs) == 1:
        fpr, tpr, _ = roc_curve(labels, probs)
        return fpr, tpr
    grid = np.linspace(0, 1, 201)
    curves = []
    for c in range(probs.shape[1]):
        fpr, tpr, _ = roc_curve(labels == c, probs[:, c])
        curves.append(np.interp(grid, fpr, tpr))
    return grid, np.mean(curves, axis=0)


def plot_roc(results: Results, path: str | Path) -> Path:
    """One panel per MIL model, one curve per encoder (seed-ensembled test predictions)."""
    models = list(dict.fromkeys(ev.model for evs in results.values() for ev in evs))
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 4.2), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        for encoder, evaluations in results.items():
            for ev in (e for e in evaluations if e.model == model):
                fpr, tpr = roc_points(ev.labels, ev.probs)
                value = ev.summary["seed_ensemble"]["auc"]["value"]
                ax.plot(fpr, tpr, label=f"{encoder} (AUC {value:.3f})")
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        ax.set(title=model, xlabel="false positive rate", ylabel="true positive rate")
        ax.set_aspect("equal")
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
