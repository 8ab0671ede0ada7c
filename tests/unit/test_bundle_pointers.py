"""Bundle pointers from a relative bundles root (the default ``var/bundles``): promote, rollback and
status write links that resolve, refuse to write one that would dangle, and report a broken one."""

from __future__ import annotations

from pathlib import Path

import pytest

from offline_jobs.cli.pipeline import main as pipeline
from offline_jobs.publish.promote import rollback
from rec_contract.atomic import point_symlink
from rec_contract.bundle import BundleError, promote, resolve_pointer
from tests.unit._fakes import write_toy_bundle

ROOT = Path("var/bundles")  # relative, as the CLI's default


def _link(pointer: str) -> str:
    """What the pointer stores."""
    return (ROOT / pointer).readlink().as_posix()


@pytest.fixture
def relative_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PROFILEREC_BUNDLES_ROOT", raising=False)
    write_toy_bundle(ROOT, "v1")
    write_toy_bundle(ROOT, "v2")
    return ROOT


def test_promote_and_rollback_from_a_relative_root_write_resolving_links(relative_root: Path) -> None:
    assert promote(relative_root, "v1") is None
    assert promote(relative_root, "v2") == "v1"
    assert _link("current") == "v2"  # relative to the link's own folder
    assert _link("previous") == "v1"

    report = rollback(relative_root)

    assert report == {"live": "v1", "rolled_back_from": "v2"}
    assert _link("current") == "v1" and _link("previous") == "v2"
    assert resolve_pointer(relative_root) == (relative_root / "v1").resolve()
    assert resolve_pointer(relative_root, "previous") == (relative_root / "v2").resolve()


def test_status_exits_non_zero_when_the_live_pointer_is_missing_or_broken(
    relative_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--work-dir", "var"]
    assert pipeline([*common, "status"]) == 2
    assert "no live bundle" in capsys.readouterr().err

    promote(relative_root, "v1")
    assert pipeline([*common, "status"]) == 0
    assert '"version": "v1"' in capsys.readouterr().out

    current = relative_root / "current"
    current.unlink()
    current.symlink_to("var/bundles/v1")  # what rollback wrote before: var/bundles/var/bundles/v1
    with pytest.raises(BundleError, match="is broken"):
        resolve_pointer(relative_root)
    assert pipeline([*common, "status"]) == 2
    err = capsys.readouterr().err
    assert "no live bundle" in err and "var/bundles/v1 is broken" in err
    assert pipeline([*common, "rollback"]) == 2  # nothing valid to roll back to: an error, not a success

    promote(relative_root, "v2")  # promoting repairs it
    assert _link("current") == "v2" and pipeline([*common, "status"]) == 0


def test_a_pointer_that_would_dangle_is_not_written(relative_root: Path) -> None:
    promote(relative_root, "v1")
    with pytest.raises(OSError, match="would not resolve"):
        point_symlink(relative_root / "current", relative_root / "v9")
    assert _link("current") == "v1"  # the old pointer is intact
    assert sorted(p.name for p in relative_root.iterdir()) == ["current", "v1", "v2"]  # no temporary left
    absolute = (relative_root / "v2").resolve()
    point_symlink(relative_root / "current", absolute)  # an absolute target is stored relative too
    assert _link("current") == "v2"
