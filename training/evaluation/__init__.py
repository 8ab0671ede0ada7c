"""Full-ranking evaluation with the papers' protocol."""

from training.evaluation.metrics import DEFAULT_KS, EvalResult, evaluate, rank_metrics, top_k

__all__ = ["DEFAULT_KS", "EvalResult", "evaluate", "rank_metrics", "top_k"]
