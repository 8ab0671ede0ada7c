"""docs/configuration.md is what scripts/config_doc.py generates from the settings classes today, and it
names every setting of each class."""

from __future__ import annotations

from scripts import config_doc


def test_configuration_doc_is_current() -> None:
    assert config_doc.main(["--check"]) == 0, "run: python -m scripts.config_doc"


def test_every_setting_has_a_row() -> None:
    import importlib

    text = config_doc.render()
    for _, module, name in config_doc.SECTIONS:
        cls = getattr(importlib.import_module(module), name)
        for field_name in cls.model_fields:
            assert f"`PROFILEREC_{field_name.upper()}`" in text, f"{name}.{field_name}"
