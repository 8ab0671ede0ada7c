"""Profile writing: strategies, prompt files, validation and grounding, extractive profiles, entity text."""
