"""Online recommendation service (FastAPI, onnxruntime, Qdrant, Redis; no torch)."""
