"""Row statuses: a fixed, documented set, derived from the core's error *types* (never text).

A crawl of thousands of strangers' repos meets every failure the core knows how to name; the
dataset keeps one row per adapter folder either way, so coverage and failure modes are part of
the published data rather than lost in a log.
"""

from __future__ import annotations

from gradience import errors as E

#: status → what it means (the dataset card and docs/ecosystem.md print this table).
STATUSES: dict[str, str] = {
    "ok": "audited; untrained adapters are ok with the `untrained` flag",
    "gated": "gated repo whose conditions the crawler's token has not accepted",
    "private": "private repo, or access denied to the crawler's token",
    "not_found": "repo, revision or adapter folder gone between listing and audit",
    "unsupported_type": "a PEFT type that is not a low-rank product (IA3, LoHa, prompt tuning...)",
    "not_lora": "listed as PEFT but holds no adapter_config.json there",
    "no_weights": "adapter_config.json without adapter weights",
    "lfs_pointer": "the weights file is a Git LFS pointer committed as a regular file",
    "corrupt": "weights or config unreadable, truncated or inconsistent",
    "too_large": "LoRA tensors (or a whole .bin) above the crawler's byte cap",
    "transient_error": "the Hub kept failing (5xx, 429, timeouts) after bounded retries: retried next run",
}

# Most specific class first: isinstance() walks this list in order.
_BY_TYPE: tuple[tuple[type[BaseException], str], ...] = (
    (E.GatedRepoError, "gated"),
    (E.PrivateRepoError, "private"),
    (E.HubAccessError, "private"),
    (E.TooLargeError, "too_large"),
    (E.HubTransferError, "transient_error"),
    (E.NotLoraError, "not_lora"),
    (E.NoWeightsError, "no_weights"),
    (E.AdapterNotFoundError, "not_found"),
    (E.LfsPointerError, "lfs_pointer"),
    (E.AdapterFormatError, "corrupt"),
    (E.ConfigError, "corrupt"),
    (E.UnsupportedAdapterError, "unsupported_type"),
    (E.UsageError, "corrupt"),
    (E.HubError, "transient_error"),
)


def status_of(exc: BaseException) -> tuple[str, str]:
    """``(status, status_detail)`` for an exception an audit raised.

    Anything outside the Gradience hierarchy is a crawler-side surprise (a bug or an
    unexpected client error): ``transient_error``, so the next run retries it rather than
    publishing a verdict about the adapter.
    """
    for cls, status in _BY_TYPE:
        if isinstance(exc, cls):
            if isinstance(exc, E.GradienceError):  # the message without local cache paths
                return status, f"{exc.code}: {exc.message}"[:500]
            return status, f"{status}: {exc}"[:500]
    return "transient_error", f"internal: {type(exc).__name__}: {exc}"[:500]
