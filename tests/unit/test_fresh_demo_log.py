"""The fresh-clone demo benchmark reads a demo log the way a reader would."""

from benchmarks.fresh_demo import read_log

LOG = """installing into .venv: torch (CPU build), the project with its jobs and dev extras
[1/3] building the artefacts on Intel(R) Xeon(R) Processor x2 (load 1.2)
[3/3] asking for recommendations

$ curl -s 'http://127.0.0.1:8000/v1/users/1/recommendations?n=10&explain=true'
# top-10 for MovieLens user 1: HTTP 200
   1. Schindler's List (1993)                                score 0.8123  [Drama, War]
   2. Fargo (1996)                                           score 0.7001  [Crime, Drama, Thriller]
  the user's profiles:
    - likes dramas
Total 412 s on Intel(R) Xeon(R) Processor x2 (load 1.9).
"""


def test_read_log_counts_lines_answers_and_the_total():
    seen = read_log(LOG)
    assert seen["lines"] == 11
    assert seen["warning_lines"] == [] and seen["tracebacks"] == 0
    assert seen["recommendation_lines"] == 2
    assert seen["demo_total_s"] == 412.0 and seen["demo_machine"].startswith("Intel(R) Xeon(R)")


def test_read_log_sees_warnings_tracebacks_and_a_missing_total():
    bad = "UserWarning: something\nTraceback (most recent call last):\n  File x\nValueError: boom\n"
    seen = read_log(bad)
    assert len(seen["warning_lines"]) == 1 and seen["tracebacks"] == 2
    assert seen["demo_total_s"] is None and seen["recommendation_lines"] == 0
