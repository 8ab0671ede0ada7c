"""LLM backends: the request/response types, the backend registry, one module per engine."""
