"""Weakly-supervised MIL benchmark on slide feature files (Chowder, DeepMIL/ABMIL, baselines).

Modules: ``data`` (labels CSV, feature files, bags, batches), ``models``, ``train`` (early
stopping on validation), ``splits`` (patient-level), ``protocols`` (official split, k-fold,
nested CV), ``metrics``, ``report`` (JSON, Markdown, ROC), ``heatmap``, ``benchmark`` (run
models, write outputs), ``synthetic`` (bags with a known answer), ``cli``.
"""
