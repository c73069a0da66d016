"""Errors worded for a browser: a title and one line, chosen by the error's type, never by
reading its message. The core's messages name no command-line flag; what a visitor can do
about an error in the page (sign in, give a subfolder) is added here."""

from __future__ import annotations

import html
import tempfile
from collections.abc import Mapping

import gradio as gr

from gradience import errors as E

# (class, title, advice for a browser user); the first class that matches wins, so subclasses
# come before their parents.
_TITLES: tuple[tuple[type[E.GradienceError], str, str], ...] = (
    (E.NotLoraError, "Not a LoRA adapter",
     "If the adapter sits in a folder of the repo, give that folder as the subfolder."),
    (E.NoWeightsError, "No adapter weights", ""),
    (E.RevisionNotFoundError, "Revision not found", ""),
    (E.GatedRepoError, "Gated repo",
     "Sign in with a Hugging Face account that has accepted the repo's conditions."),
    (E.PrivateRepoError, "Repo not found", "If it is private, sign in with an account that can see it."),
    (E.AdapterNotFoundError, "Not found", "If the repo is private, sign in with an account that can see it."),
    (E.LfsPointerError, "Weights not uploaded", ""),
    (E.UnsafePickleError, "Unsafe file", ""),
    (E.AdapterFormatError, "Damaged adapter file", ""),
    (E.UnsupportedAdapterError, "Adapter type not supported", ""),
    (E.ConfigError, "Bad adapter_config.json", ""),
    (E.IncompatibleAdaptersError, "These adapters cannot be merged",
     "Merge adapters trained for the same base model; the merge audit shows which layers they share."),
    (E.UntrainedAdapterError, "Untrained adapter", ""),
    (E.UsageError, "Cannot do that", ""),
    (E.HubAccessError, "No access", "Sign in with an account that has access."),
    (E.TooLargeError, "Too large", "Audit it on your own machine with the Gradience package instead."),
    (E.RateLimitedError, "The Hub is busy", "Try again in a minute."),
    (E.HubTimeoutError, "The Hub timed out", "Try again in a minute."),
    (E.HubTransferError, "The Hub is not answering", "Try again in a minute."),
    (E.HubError, "Hub error", ""),
)  # fmt: skip


def err(message: str, title: str = "Error") -> gr.Error:
    """A message for the visitor; no server-side traceback, since nothing went wrong in the app.

    The title also opens the message: gradio's toast shows only "Error" as its heading. The
    text is escaped, since the toast renders HTML and messages quote what visitors typed.
    """
    text = f"{title}: {message[:1].upper()}{message[1:]}"
    return gr.Error(html.escape(text, quote=False), title=title, print_exception=False)


def title_for(e: E.GradienceError) -> tuple[str, str]:
    """(title, advice) for an error, by its type."""
    for cls, title, advice in _TITLES:
        if isinstance(e, cls):
            return title, advice
    return "Cannot read the adapter", ""


def notice(e: E.GradienceError, names: Mapping[str, str] | None = None) -> gr.Error:
    """The core's error as a titled notice, with server paths replaced by what the visitor typed."""
    title, advice = title_for(e)
    message = e.message
    if e.path and e.path not in message:
        message = f"{e.path}: {message}"
    for target, name in sorted((names or {}).items(), key=lambda kv: -len(kv[0])):
        message = message.replace(target, name)
    message = message.replace(tempfile.gettempdir(), "…")
    if advice:
        message = f"{message.rstrip('.')}. {advice}"
    return err(message, title=title)
