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


LINE_STYLES = ("-", "--", "-.", ":")  # told apart in grey print too, not by colour alone
ROC_BOOTSTRAP = 200
FPR_GRID = np.linspace(0, 1, 101)


def display_name(encoder: str) -> str:
    """An encoder's name for a legend: a folder or hub path becomes its last part."""
    text = encoder.removeprefix("hf-hub:").rstrip("/\\")
    return Path(text).name if ("/" in text or "\\" in text) else text


def roc_band(
    labels: np.ndarray, probs: np.ndarray, *, n_boot: int = ROC_BOOTSTRAP, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """95% bootstrap band (over slides) of the true positive rate on ``FPR_GRID``."""
    rng = np.random.default_rng(seed)
    labels, probs = np.asarray(labels), np.asarray(probs)
    curves = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(labels), len(labels))
        if len(np.unique(labels[pick])) < 2:
            continue  # a resample without both classes has no ROC curve
        fpr, tpr = roc_points(labels[pick], probs[pick])
        curves.append(np.interp(FPR_GRID, fpr, tpr))
    if not curves:
        return np.zeros_like(FPR_GRID), np.ones_like(FPR_GRID)
    low, high = np.percentile(np.stack(curves), [2.5, 97.5], axis=0)
    return low, high


def _count_line(labels: np.ndarray, probs: np.ndarray) -> str:
    labels = np.asarray(labels)
    if np.ndim(probs) == 1:
        return f"n = {len(labels)} slides ({int((labels != 0).sum())} positive)"
    return f"n = {len(labels)} slides, {probs.shape[1]} classes (macro one-vs-rest)"


def plot_roc(results: Results, path: str | Path) -> Path:
    """One panel per MIL model, one curve per encoder (seed-ensembled test predictions), each
    with its 95% bootstrap band, its AUC and interval in the legend, the number of test slides
    in the panel, and its own line style."""
    models = list(dict.fromkeys(ev.model for evs in results.values() for ev in evs))
    fig, axes = plt.subplots(1, len(models), figsize=(4.6 * len(models), 4.8), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        counts = set()
        for i, (encoder, evaluations) in enumerate(results.items()):
            style = LINE_STYLES[i % len(LINE_STYLES)]
            for ev in (e for e in evaluations if e.model == model):
                fpr, tpr = roc_points(ev.labels, ev.probs)
                low, high = roc_band(ev.labels, ev.probs)
                auc_ci = ev.summary["seed_ensemble"]["auc"]
                label = (
                    f"{display_name(encoder)}: AUC {auc_ci['value']:.3f} "
                    f"({auc_ci['low']:.3f}-{auc_ci['high']:.3f})"
                )
                (line,) = ax.plot(fpr, tpr, linestyle=style, linewidth=1.8, label=label)
                ax.fill_between(FPR_GRID, low, high, color=line.get_color(), alpha=0.15, lw=0)
                counts.add(_count_line(ev.labels, ev.probs))
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        ax.set(title=model, xlabel="false positive rate", ylabel="true positive rate")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_aspect("equal")
        ax.legend(
            loc="lower right", fontsize=7.5, title="; ".join(sorted(counts)), title_fontsize=7.5
        )
    fig.suptitle("ROC on test slides (shaded: 95% bootstrap band over slides)", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
