"""One-line live charts and progress boards for the tools people train and tune with.

Each integration is its own module, imported only when used, and needs its framework (an optional
extra): :mod:`livewidget.integrations.keras` (``pip install 'livewidget[keras]'``),
:mod:`~livewidget.integrations.xgboost` (``[xgboost]``), :mod:`~livewidget.integrations.lightgbm`
(``[lightgbm]``), :mod:`~livewidget.integrations.optuna` (``[optuna]``),
:mod:`~livewidget.integrations.lightning` (PyTorch Lightning, ``[lightning]``),
:mod:`~livewidget.integrations.transformers` (Hugging Face ``Trainer``, ``[transformers]``).
Importing one without its framework raises an ``ImportError`` that names the extra.

Every integration publishes the same way, through :func:`livewidget.points` (chart points, packed per
event, never blocking the training loop) and :class:`livewidget.progress` (rows of a
:class:`~livewidget.ProgressBoard`), so the charts and boards also show runs from other processes and
machines, and ``chart.df`` / ``board.df`` hold every point and job. Chart points carry the framework's
own metric names (``loss``, ``val_loss``; ``validation_0-rmse``, ``valid_0-l2``; ``value``) plus
``epoch``/``step``/``iteration``/``trial``.
"""

from __future__ import annotations

__all__ = ["keras", "lightgbm", "lightning", "optuna", "transformers", "xgboost"]
