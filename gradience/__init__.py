"""Gradience: spectral audits of LoRA adapters from the weights alone.

The public API is small and loads lazily, so ``import gradience`` costs almost nothing
and never imports torch, gradio or matplotlib::

    import gradience
    result = gradience.audit("path/to/adapter")
    print(result.summary()["utilization_mean"])
    gradience.compress("path/to/adapter", "out/", rank=4)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.12.0"

#: Every error class is part of the API: surfaces catch them by type (see gradience.errors).
_ERRORS = (
    "GradienceError",
    "AdapterNotFoundError",
    "NotLoraError",
    "NoWeightsError",
    "RevisionNotFoundError",
    "AdapterFormatError",
    "UnsafePickleError",
    "LfsPointerError",
    "UnsupportedAdapterError",
    "ConfigError",
    "UsageError",
    "IncompatibleAdaptersError",
    "UntrainedAdapterError",
    "TelemetryError",
    "HubError",
    "HubAccessError",
    "GatedRepoError",
    "PrivateRepoError",
    "HubOIDCError",
    "TooLargeError",
    "HubTransferError",
    "RateLimitedError",
    "HubTimeoutError",
    "GitHubError",
)

_EXPORTS = {
    "audit": "gradience.auditor",
    "AdapterAudit": "gradience.auditor",
    "LayerAudit": "gradience.auditor",
    "compress": "gradience.compression",
    "CompressResult": "gradience.compression",
    "load_adapter": "gradience.adapters.load",
    "Adapter": "gradience.adapters.load",
    "available_policies": "gradience.spectral.policies",
    "get_policy": "gradience.spectral.policies",
    "diff": "gradience.diff",
    "AuditDiff": "gradience.diff",
    "Rules": "gradience.diff",
    "Recommendation": "gradience.auditor",
    "merge_audit": "gradience.merge.pairwise",
    "MergeAudit": "gradience.merge.pairwise",
    "PairAudit": "gradience.merge.pairwise",
    "merge": "gradience.merge.execute",
    "MergeResult": "gradience.merge.execute",
    "OpenOptions": "gradience.open",
    "open_adapter": "gradience.open",
    "available_strategies": "gradience.merge.strategies",
    **{name: "gradience.errors" for name in _ERRORS},
}

__all__ = ["__version__", *sorted(_EXPORTS)]

if TYPE_CHECKING:
    from gradience.adapters.load import Adapter, load_adapter
    from gradience.auditor import AdapterAudit, LayerAudit, audit
    from gradience.compression import CompressResult, compress
    from gradience.diff import AuditDiff, Rules, diff
    from gradience.errors import GradienceError
    from gradience.spectral.policies import available_policies, get_policy


# ``gradience.merge`` and ``gradience.diff`` are functions; the package and the module of the
# same names must not shadow them. The import system binds a module to its parent's attribute
# only when it first loads it, so load both now (the package is empty, the module light) and
# drop the bindings: later imports of them or their submodules leave the functions in place.
for _name in ("merge", "diff"):
    importlib.import_module(f"gradience.{_name}")
    del globals()[_name]
del _name


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(_EXPORTS[name])
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gradience' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
