"""The code-layout rules of scripts/check_layout.py hold on the repository, and the checker finds a
breach of each where one is made (a small tree written here)."""

from __future__ import annotations

from pathlib import Path

from scripts import check_layout as layout


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for package in layout.PACKAGES:
        (root / package).mkdir(exist_ok=True)
    return root


def test_no_import_cycle_among_project_modules() -> None:
    edges = list(layout.imports(layout.modules()))
    assert edges, "the import graph is empty: the checker reads nothing"
    assert layout.cycles(edges) == []


def test_layers_hold_and_the_jobs_use_only_the_service_write_path() -> None:
    assert layout.layer_breaches(list(layout.imports(layout.modules()))) == []


def test_a_cycle_through_a_function_level_import_is_found(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "offline_jobs/__init__.py": "",
            "offline_jobs/a.py": "from offline_jobs.b import g\n",
            "offline_jobs/b.py": "def g():\n    from offline_jobs import a\n    return a\n",
            "offline_jobs/c.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from offline_jobs.a import x\n"
            ),
        },
    )
    edges = list(layout.imports(layout.modules(root)))
    assert layout.cycles(edges) == [["offline_jobs.a", "offline_jobs.b"]]
    assert not any(e.source == "offline_jobs.c" for e in edges)  # TYPE_CHECKING imports never run


def test_a_job_importing_service_internals_is_a_breach(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "service/__init__.py": "",
            "service/runtime.py": "",
            "service/online_store.py": "",
            "offline_jobs/__init__.py": "",
            "offline_jobs/ok.py": "from service.online_store import write_profiles\n",
            "offline_jobs/bad.py": "def f():\n    from service.runtime import build_runtime\n",
            "rec_contract/__init__.py": "",
            "rec_contract/up.py": "import service.runtime\n",
        },
    )
    breaches = layout.layer_breaches(list(layout.imports(layout.modules(root))))
    assert len(breaches) == 2
    assert any(b.startswith("offline_jobs.bad:2 imports service.runtime") for b in breaches)
    assert any(b.startswith("rec_contract.up:1 imports service.runtime") for b in breaches)


def test_no_long_file_in_offline_jobs_and_no_long_function() -> None:
    assert layout.long_files() == []
    assert layout.long_functions() == []


def test_long_files_and_functions_are_found(tmp_path: Path) -> None:
    body = "\n".join(f"    x{n} = {n}" for n in range(layout.MAX_FUNCTION_LINES))
    root = _tree(
        tmp_path,
        {
            "offline_jobs/big.py": "\n" * (layout.MAX_FILE_LINES + 1),
            "offline_jobs/llm/torch_engine.py": "\n" * (layout.MAX_FILE_LINES + 1),
            "service/long.py": f"def f():\n{body}\n",
            "benchmarks/long.py": f"def g():\n{body}\n",
        },
    )
    assert [p.split(":")[0] for p in layout.long_files(root)] == ["offline_jobs/big.py"]
    assert [p.split(" ")[1] for p in layout.long_functions(root)] == ["f:"]
