"""Benchmarks: scripts that print figures and append them, with commit, date and machine, to
``benchmarks/results.jsonl`` (rendered to ``benchmarks/RESULTS.md``)."""
