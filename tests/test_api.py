"""The public Python surface: what ``import gradience`` exports, and that it stays light."""

from __future__ import annotations

import subprocess
import sys

import gradience

EXPECTED = {
    "Adapter", "AdapterAudit", "CompressResult", "LayerAudit", "Recommendation", "__version__",
    "audit", "available_policies", "compress", "get_policy", "load_adapter",
    "merge_audit", "MergeAudit", "PairAudit", "merge", "MergeResult", "available_strategies",
    "OpenOptions", "open_adapter",
}  # fmt: skip


def test_exported_names_are_the_intended_ones_and_every_error_class():
    from gradience import errors

    exported = set(gradience.__all__)
    assert exported >= EXPECTED
    error_classes = {n for n in errors.__all__ if n[0].isupper()}
    assert exported >= error_classes  # surfaces catch errors by type: all of them are API
    for name in exported:
        assert getattr(gradience, name) is not None
    for name in error_classes:
        assert issubclass(getattr(gradience, name), gradience.GradienceError)


def test_error_codes_are_stable_and_distinct_per_kind():
    from gradience import errors

    codes = errors.error_codes()
    for code in ("not_lora", "no_weights", "lfs_pointer", "corrupt", "unsupported_type", "gated", "private",
                 "too_large", "transient_error", "rate_limited", "timeout", "incompatible", "untrained"):  # fmt: skip
        assert code in codes
    e = errors.TooLargeError("x", repo_id="u/r", needed=10, limit=5, param="max_bytes")
    assert e.to_dict() == {"code": "too_large", "type": "TooLargeError", "message": "x", "repo_id": "u/r",
                           "param": "max_bytes", "needed": 10, "limit": 5}  # fmt: skip
    assert isinstance(e, OSError) and isinstance(errors.GatedRepoError("g"), PermissionError)


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
