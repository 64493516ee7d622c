"""Weakly-supervised MIL benchmark on slide feature files (Chowder, DeepMIL/ABMIL, baselines).

Modules: ``data`` (labels CSV, feature files, bags, batches), ``models``, ``train`` (early
stopping on validation, learning-rate grids), ``splits`` (patient-level), ``protocols``
(official split, k-fold, nested CV, ensembles), ``repeats`` (finished repeats on disk),
``metrics``, ``report`` (JSON, Markdown, ROC), ``heatmap``, ``benchmark`` (run models, write
outputs), ``synthetic`` (bags with a known answer), ``throughput`` (speed against the GEMM
floor), ``cli``.
"""
