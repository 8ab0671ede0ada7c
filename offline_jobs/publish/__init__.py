"""From a bundle to live: Qdrant upload, publishing and promotion, the retrain rollout."""
