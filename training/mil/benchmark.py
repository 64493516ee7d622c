"""Run the benchmark: every MIL model under one protocol, then write JSON, tables and ROC curves."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from .data import Bag
from .models import canonical_name
from .protocols import Evaluation, ProtocolOptions, evaluate
from .report import Results, plot_roc, write_json, write_markdown
from .train import TrainOptions, default_lrs

log = logging.getLogger(__name__)


def candidates_for(
    model: str,
    base: TrainOptions,
    lrs: Sequence[float] = (),
    weight_decays: Sequence[float] = (),
    options_by_model: Mapping[str, tuple] | None = None,
) -> list[TrainOptions]:
    """The settings a protocol chooses from (on validation) for ``model``: lr x weight decay.

    Without ``lrs`` (and without ``base.lr``) the model's default grid is used
    (``train.LR_GRID``). ``options_by_model`` maps a model name to its constructor options
    (e.g. Chowder's R).
    """
    lr_values = list(lrs) or ([base.lr] if base.lr is not None else list(default_lrs(model)))
    wd_values = list(weight_decays) or [base.weight_decay]
    own = (options_by_model or {}).get(canonical_name(model), ())
    return [
        replace(base, model=model, lr=lr, weight_decay=wd, model_options=own)
        for lr, wd in itertools.product(lr_values, wd_values)
    ]


def run_models(
    bags: Sequence[Bag],
    n_classes: int,
    models: Sequence[str],
    base: TrainOptions,
    protocol: ProtocolOptions,
    *,
    lrs: Sequence[float] = (),
    weight_decays: Sequence[float] = (),
    options_by_model: Mapping[str, tuple] | None = None,
    on_result: Callable[[list[Evaluation]], None] | None = None,
) -> list[Evaluation]:
    """Evaluate each model in ``models`` on ``bags`` under ``protocol``.

    ``on_result`` is called with the evaluations so far each time a model finishes (the command
    line writes its outputs there, so a stopped run keeps every finished model).
    """
    evaluations = []
    for model in models:
        candidates = candidates_for(model, base, lrs, weight_decays, options_by_model)
        evaluation = evaluate(bags, candidates, n_classes, protocol)
        log.info(
            "%s: AUC %.3f ± %.3f over %d repeat(s) in %.1f s",
            evaluation.model,
            evaluation.summary["auc_mean"],
            evaluation.summary["auc_std"],
            evaluation.summary["repeats"],
            evaluation.seconds,
        )
        evaluations.append(evaluation)
        if on_result is not None:
            on_result(list(evaluations))
    return evaluations


def write_outputs(results: Results, class_names: Sequence[str], out_dir: str | Path) -> dict:
    """Write ``results.json``, ``results.md`` and ``roc.png`` into ``out_dir``; returns paths."""
    out_dir = Path(out_dir)
    return {
        "json": write_json(results, class_names, out_dir / "results.json"),
        "markdown": write_markdown(results, out_dir / "results.md"),
        "roc": plot_roc(results, out_dir / "roc.png"),
    }


def print_outputs(paths: Mapping[str, object]) -> None:
    """Show the comparison table, then where every output was written."""
    print(Path(str(paths["markdown"])).read_text())
    for kind, path in paths.items():
        print(f"{kind}: {path}")
