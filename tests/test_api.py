"""The public Python surface: what ``import gradience`` exports, and that it stays light."""

from __future__ import annotations

import subprocess
import sys

import gradience

EXPECTED = {
    "Adapter", "AdapterAudit", "CompressResult", "GradienceError", "LayerAudit", "__version__",
    "audit", "available_policies", "compress", "get_policy", "load_adapter",
}  # fmt: skip


def test_exported_names_are_exactly_the_intended_ones():
    assert set(gradience.__all__) == EXPECTED
    for name in EXPECTED:
        assert getattr(gradience, name) is not None


def test_audit_stays_the_function_after_its_module_is_imported():
    import gradience.auditor  # the module must not shadow the function

    assert callable(gradience.audit) and gradience.audit.__module__ == "gradience.auditor"
    assert callable(gradience.compress)


def test_import_is_light():
    heavy = "('numpy', 'torch', 'gradio', 'rich')"
    code = f"import sys, gradience; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_unknown_attribute():
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        gradience.nope  # noqa: B018
