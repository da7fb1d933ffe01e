"""Re-ID evaluation for the training stage: the numpy metrics live in ``iaunet.core.metrics``
(so the runtime's parity against a kit ranks without this stage); re-exported here."""
from iaunet.core.metrics import distance_matrix, evaluate_rank, format_metrics, rank_metrics, re_rank

__all__ = ["distance_matrix", "evaluate_rank", "format_metrics", "rank_metrics", "re_rank"]
