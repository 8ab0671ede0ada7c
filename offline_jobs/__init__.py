"""Offline jobs: LLM profile generation, profile embedding, stores and refresh."""
