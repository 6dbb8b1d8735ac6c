"""prnet_keras.evaluate: NME metrics (sparse / dense / reconstruction), ICP, CED curves, reports.

Entry point: :func:`prnet_keras.evaluate.runner.evaluate` (also ``evaluate_model.py``).
Modules: ``metrics`` (vectorised NME), ``icp`` (open3d / scipy / simpleicp), ``report``
(yaw bins, balanced mean, CED, CSV, Markdown, plots), ``sources`` (ground truth and
predictions), ``runner`` (the run).
"""

from prnet_keras.evaluate.icp import ICPResult, icp
from prnet_keras.evaluate.report import METRICS, ced, summarize

__all__ = ["ICPResult", "icp", "METRICS", "ced", "summarize", "evaluate"]


def evaluate(*args, **kwargs):
    """See :func:`prnet_keras.evaluate.runner.evaluate` (imported lazily: it pulls in the data stack)."""
    from prnet_keras.evaluate.runner import evaluate as _evaluate

    return _evaluate(*args, **kwargs)
