"""The bot's worker: one job at a time, each turned into at most one action on the Hub.

Every action goes through the core: ``gradience.audit`` and ``gradience.diff`` on Hub
references, the badge pipeline of :mod:`gradience.hub.badges`, the Markdown of
:mod:`gradience.report.markdown`. Errors are classified by type: a 429 waits (without
spending an attempt), a transient failure retries with backoff, anything else fails the job
with its reason. The bot never acts twice for one thing and never opens a second PR.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from typing import Any

from gradience.bot.config import BotConfig
from gradience.bot.events import classify
from gradience.bot.state import Job, State
from gradience.errors import (
    AdapterNotFoundError,
    GradienceError,
    HubTransferError,
    NotLoraError,
    NoWeightsError,
    RateLimitedError,
    UnsupportedAdapterError,
    UsageError,
)

__all__ = ["COMMENT_MARKER", "PR_DESCRIPTION", "Worker", "card_section"]

log = logging.getLogger("gradience.bot")

#: Hidden marker of the bot's PR comments (how a comment is recognised as ours).
COMMENT_MARKER = "<!-- gradience-bot:pr-audit -->"
OPT_OUT_TAG = "gradience-opt-out"
OPT_IN_TAG = "gradience"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")
PR_DESCRIPTION = (
    "This pull request adds (or refreshes) a small badge on the model card showing how much of "
    "its LoRA rank this adapter uses, measured by a spectral audit of its weights with "
    "[Gradience](https://github.com/gradience). Only the section between the "
    "`<!-- gradience:start -->` / `<!-- gradience:end -->` markers changes; every other byte of "
    "the card stays as it is.\n\n"
    "**Why:** utilisation and the recommended rank tell readers (and you) whether a smaller "
    "adapter would do the same job.\n\n"
    "**Opt out:** close this pull request, or add `gradience: false` to the card's metadata "
    "(or the tag `gradience-opt-out`). The bot will not open another one."
)
CLOSE_NOTE = (
    "Closing: this repo opted out of Gradience badges (`gradience: false` or the "
    "`gradience-opt-out` tag). Sorry for the noise, and thank you."
)


def card_section(
    repo_id: str, report: dict[str, Any], *, link: str | None = None, among: dict[str, Any] | None = None
) -> str:
    """The card's Gradience section: the badge and a one-line summary (plus, with an ecosystem
    dataset, the percentile among public adapters of the same r). It holds no commit id, so a
    push that leaves the weights alone leaves the section — and the PR — alone."""
    from gradience.report.badge import badge_markdown

    rec = report.get("recommendation") or {}
    util, sr = report.get("utilization_mean"), report.get("stable_rank_mean")
    parts = [
        f"LoRA utilisation **{util:.2f}**" if util is not None else "LoRA utilisation **n/a**",
        f"stable rank **{sr:.2f}** (mean)" if sr is not None else None,
        (
            f"recommended rank **{rec['rank']}** of {rec['nominal_r']}"
            if rec.get("status") == "ok"
            else "no recommended rank (untrained)"
        ),
        "flags: " + (", ".join(f"`{f}`" for f in report.get("flags") or []) or "none"),
    ]
    line = " · ".join(p for p in parts if p)
    same_r = (among or {}).get("same_r") or {}
    if same_r.get("n"):
        r = (report.get("adapter") or {}).get("r")
        line += f" · higher than {same_r['percentile']:.0f}% of {same_r['n']} public r={r} adapters"
    return f"{badge_markdown(repo_id, report, link=link)}\n\n{line} — measured from the weights by Gradience."


class Worker:
    """Processes queued jobs until stopped (``run`` in a thread, or ``process_one`` in tests)."""

    def __init__(self, config: BotConfig, state: State) -> None:
        self.config = config
        self.state = state
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._user: dict[str, Any] | None = None
        self._dataset: Any = None

    # -- lifecycle -----------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def run(self, poll: float = 0.5) -> None:
        while not self._stop.is_set():
            if not self.process_one():
                self._wake.wait(poll)
                self._wake.clear()

    def idle(self) -> bool:
        return self.state.pending() == 0

    # -- identity ------------------------------------------------------------------------------

    def api(self) -> Any:
        from huggingface_hub import HfApi

        return HfApi(token=self.config.token)

    @property
    def user(self) -> dict[str, Any]:
        if self._user is None:
            self._user = self._hub(lambda: self.api().whoami(), "")
        return self._user

    @property
    def handle(self) -> str | None:
        return self.config.handle or self.user.get("name")

    # -- one job -------------------------------------------------------------------------------

    def process_one(self) -> bool:
        """Run the next due job; False when there was none."""
        job = self.state.next_job()
        if job is None:
            return False
        wait = self.state.wait_for_slot(job.repo, self.config.repo_interval, self.config.global_per_minute)
        if wait > 0:
            self.state.retry_later(job, wait, "rate limit: waiting for a slot", count=False)
            return True
        try:
            if self.state.work_done(job.work_key):
                self.state.finish(job, "skipped", "already done for this commit")
                return True
            outcome = getattr(self, f"_do_{job.kind}")(job)
            self.state.finish(job, *outcome)
            if outcome[0] == "done":
                self.state.record_action(job.repo)
            log.info("%s %s: %s %s", job.kind, job.repo, *outcome)
        except RateLimitedError as e:
            delay = e.retry_after or 60.0
            self.state.retry_later(
                job, delay, f"rate limited by the Hub; retrying in {delay:.0f} s", count=False
            )
            log.warning("%s %s: rate limited, retry in %.0f s", job.kind, job.repo, delay)
        except HubTransferError as e:
            if job.attempts + 1 >= self.config.max_attempts:
                self.state.finish(job, "failed", f"{e.code}: {e}")
            else:
                self.state.retry_later(job, min(2 ** (job.attempts + 1), 300), f"{e.code}: {e}")
            log.warning("%s %s: %s", job.kind, job.repo, e)
        except GradienceError as e:
            self.state.finish(job, "failed", f"{e.code}: {e}")
            log.warning("%s %s: failed: %s", job.kind, job.repo, e)
        except Exception as e:  # a bug must not stop the bot; the job keeps its reason
            self.state.finish(job, "failed", f"internal error: {type(e).__name__}: {e}")
            log.exception("%s %s: internal error", job.kind, job.repo)
        return True

    # -- the jobs ------------------------------------------------------------------------------

    def _do_card(self, job: Job) -> tuple[str, str]:
        repo, sha = job.repo, job.payload["sha"]
        tags, card = self._repo_meta(repo, sha)
        if _opted_out(tags, card):
            return self._close_for_opt_out(repo)
        if OPT_IN_TAG not in tags and repo not in self.config.repos:
            return "skipped", "not opted in"
        prior = self.state.pr(repo)
        if prior and prior["state"] == "closed":
            return (
                "skipped",
                "our last badge PR was closed; not proposing another (use `gradience badge open`)",
            )
        return self.badge(repo, sha)

    def badge(self, repo: str, revision: str = "main", *, force: bool = False) -> tuple[str, str]:
        """Audit ``repo`` at ``revision`` and create / update / leave the badge PR."""
        from gradience.hub.badges import publish_badge

        report = self._audit(repo, revision)
        if report is None:
            return "skipped", "not a LoRA adapter repo (or several adapters: no single badge)"
        section = card_section(repo, report, link=self.config.link, among=self._among(repo, report))
        prior = self.state.pr(repo)
        if not force and prior and prior["state"] == "open" and prior["section"] == section:
            return "skipped", "the badge is unchanged"
        result = self._hub(
            lambda: publish_badge(
                repo, report, self.config.token, section=section, link=self.config.link,
                description=PR_DESCRIPTION,
            ),
            repo,
        )  # fmt: skip
        self.state.set_pr(repo, result.pr_num, "open" if result.pr_num else "none", section)
        return "done", f"{result.status}" + (f" PR #{result.pr_num}" if result.pr_num else "")

    def _do_pr_status(self, job: Job) -> tuple[str, str]:
        prior = self.state.pr(job.repo)
        status = job.payload.get("status")
        if prior and prior["num"] == job.payload.get("num") and status in ("closed", "merged"):
            self.state.set_pr(job.repo, prior["num"], status, prior["section"])
            return "done", f"our PR #{prior['num']} is {status}"
        return "skipped", "not our badge PR"

    def _do_pr(self, job: Job) -> tuple[str, str]:
        from gradience.hub.badges import PR_TITLE

        repo, num = job.repo, int(job.payload["num"])
        api = self.api()
        details = self._hub(lambda: api.get_discussion_details(repo, num), repo)
        if details.title == PR_TITLE or details.author == self.user.get("name"):
            return "skipped", "our own pull request"
        if details.status != "open":
            return "skipped", f"the pull request is {details.status}"
        tags, card = self._repo_meta(repo, "main")
        if _opted_out(tags, card) or (OPT_IN_TAG not in tags and repo not in self.config.repos):
            return "skipped", "not opted in"
        head = job.payload.get("sha") or self._pr_head(repo, num)
        prior = self.state.comment(repo, num)
        if prior and prior["head"] == head:
            return "skipped", "already commented on this head"
        base_ref = (getattr(details, "target_branch", None) or "refs/heads/main").removeprefix("refs/heads/")
        base = self._hub(lambda: api.model_info(repo, revision=base_ref).sha, repo)
        folders = self._changed_adapters(repo, base, head)
        if not folders:
            return "skipped", "the pull request changes no adapter weights or config"
        body = self._diff_comment(repo, base, head, folders)
        digest = hashlib.sha256(body.encode()).hexdigest()
        if prior:
            if prior["body_hash"] != digest:
                self._hub(lambda: api.edit_discussion_comment(repo, num, prior["id"], body), repo)
            self.state.set_comment(repo, num, prior["id"], head, digest)
            return "done", f"comment on #{num} updated"
        c = self._hub(lambda: api.comment_discussion(repo, num, body), repo)
        self.state.set_comment(repo, num, c.id, head, digest)
        return "done", f"commented on #{num}"

    def _do_mention(self, job: Job) -> tuple[str, str]:
        from gradience.report.markdown import audit_markdown

        repo, num = job.repo, int(job.payload["num"])
        revision = self._pr_head(repo, num) if job.payload.get("is_pr") else "main"
        report = self._audit(repo, revision)
        if report is None:
            body = "I could not find a single LoRA adapter to audit in this repo."
        else:
            body = audit_markdown(report, title=f"Gradience audit of {repo}")
        self._hub(lambda: self.api().comment_discussion(repo, num, body), repo)
        return "done", f"replied on #{num}"

    # -- helpers ------------------------------------------------------------------------------

    def _hub(self, call: Any, repo: str) -> Any:
        """A Hub call with its failures typed (429 → RateLimitedError, 5xx → transient)."""
        from gradience.hub.errors import translate

        try:
            return call()
        except GradienceError:
            raise
        except Exception as e:
            typed = translate(e, repo)
            if typed is not None:
                raise typed from e
            raise

    def _options(self, revision: str, subfolder: str | None = None) -> Any:
        from gradience.open import OpenOptions

        return OpenOptions(
            token=self.config.token or False, revision=revision, subfolder=subfolder,
            max_bytes=self.config.max_bytes,
        )  # fmt: skip

    def _audit(self, repo: str, revision: str, subfolder: str | None = None) -> dict[str, Any] | None:
        import gradience

        try:
            res = gradience.audit(repo, options=self._options(revision, subfolder))
        except (NotLoraError, NoWeightsError, UnsupportedAdapterError):
            return None
        except UsageError as e:
            if e.param == "subfolder":  # several adapters in one repo: no single badge
                return None
            raise
        return res.to_dict(layers=True)

    def _among(self, repo: str, report: dict[str, Any]) -> dict[str, Any] | None:
        """Where this adapter stands in the ecosystem dataset, when one is configured."""
        util = report.get("utilization_mean")
        if not self.config.dataset or util is None or "untrained" in (report.get("flags") or []):
            return None
        from gradience.ecosystem.discovery import family_of
        from gradience.ecosystem.percentile import place
        from gradience.ecosystem.stats import resolve_dataset

        if self._dataset is None:
            self._dataset = resolve_dataset(self.config.dataset)
        a = report.get("adapter") or {}
        return place(self._dataset, utilization=util, r=a.get("r"), family=family_of(a.get("base_model")),
                     exclude=(repo, ""))  # fmt: skip

    def _repo_meta(self, repo: str, revision: str) -> tuple[list[str], dict[str, Any]]:
        info = self._hub(lambda: self.api().model_info(repo, revision=revision), repo)
        card = info.card_data.to_dict() if getattr(info, "card_data", None) is not None else {}
        return list(info.tags or []), card

    def _pr_head(self, repo: str, num: int) -> str:
        refs = self._hub(lambda: self.api().list_repo_refs(repo, include_pull_requests=True), repo)
        for r in refs.pull_requests or []:
            if r.ref == f"refs/pr/{num}":
                return r.target_commit
        raise AdapterNotFoundError(f"pull request #{num} of {repo} has no head", repo_id=repo)

    def _adapter_files(self, repo: str, revision: str) -> dict[str, str | None]:
        info = self._hub(lambda: self.api().model_info(repo, revision=revision, files_metadata=True), repo)
        out = {}
        for s in info.siblings or []:
            if s.rfilename.rsplit("/", 1)[-1] in ADAPTER_FILES:
                out[s.rfilename] = (s.lfs.sha256 if s.lfs else None) or s.blob_id
        return out

    def _changed_adapters(self, repo: str, base: str, head: str) -> list[str]:
        """Adapter folders ('' for the root) whose config or weights differ between commits."""
        a, b = self._adapter_files(repo, base), self._adapter_files(repo, head)
        changed = {p for p in set(a) | set(b) if a.get(p) != b.get(p)}
        return sorted({p.rsplit("/", 1)[0] if "/" in p else "" for p in changed})

    def _diff_comment(self, repo: str, base: str, head: str, folders: list[str]) -> str:
        import gradience
        from gradience.report.markdown import diff_markdown

        parts = [
            COMMENT_MARKER,
            f"## Gradience: LoRA audit of this pull request ({head[:7]} vs {base[:7]})",
            "",
        ]
        for folder in folders:
            where = f"{repo}/{folder}" if folder else repo
            sides = []
            for sha in (base, head):
                try:
                    sides.append(gradience.audit(f"{repo}@{sha}", options=self._options(sha, folder or None)))
                except (NotLoraError, NoWeightsError, AdapterNotFoundError):
                    sides.append(None)
                except HubTransferError:
                    raise
                except GradienceError as e:
                    parts += [
                        f"**{where}**: the {'base' if sha == base else 'head'} cannot be audited: {e}",
                        "",
                    ]
                    sides = None
                    break
            if sides is None or sides == [None, None]:
                continue
            d = gradience.diff(sides[0], sides[1])
            parts += [diff_markdown(d.to_dict(), title=where, heading=3), ""]
        parts.append(
            "<sub>Posted by the Gradience bot; it edits this comment when the pull request changes.</sub>"
        )
        return "\n".join(parts) + "\n"

    def _close_for_opt_out(self, repo: str) -> tuple[str, str]:
        prior = self.state.pr(repo)
        num = prior["num"] if prior and prior["state"] == "open" else None
        if num is None:
            from gradience.hub.badges import our_open_pr

            api = self.api()
            num = self._hub(lambda: our_open_pr(api, repo), repo)
        if num is None:
            self.state.set_pr(repo, None, "opted_out", None)
            return "skipped", "opted out"
        self._hub(lambda: self.api().change_discussion_status(repo, num, "closed", comment=CLOSE_NOTE), repo)
        self.state.set_pr(repo, num, "opted_out", None)
        return "done", f"opted out: closed PR #{num}"

    # -- by hand (gradience badge ...) ---------------------------------------------------------

    def open_badge(self, repo: str) -> tuple[str, str]:
        """The operator names this repo: badge it unless it opted out."""
        tags, card = self._repo_meta(repo, "main")
        if _opted_out(tags, card):
            raise UsageError(f"{repo} opted out of Gradience badges; nothing was proposed", repo_id=repo)
        status, detail = self.badge(repo, "main", force=True)
        if status == "skipped" and detail.startswith("not a LoRA"):
            raise UsageError(
                f"{repo} holds no single LoRA adapter at its root (none, or several in subfolders): "
                "a model card badge needs one",
                repo_id=repo,
            )
        return status, detail

    def refresh_badge(self, repo: str) -> tuple[str, str]:
        """Bring an existing badge (open PR or card section) up to date; never a new PR."""
        from gradience.hub.badges import our_open_pr, read_card
        from gradience.hub.cards import has_section

        api = self.api()
        open_pr = self._hub(lambda: our_open_pr(api, repo), repo)
        card = self._hub(lambda: read_card(api, repo), repo)
        if open_pr is None and not has_section(card):
            raise UsageError(f"{repo} has no Gradience badge or open badge PR to refresh; open one first",
                             repo_id=repo)  # fmt: skip
        if open_pr is not None:
            prior = self.state.pr(repo)
            self.state.set_pr(repo, open_pr, "open", prior["section"] if prior else None)
        return self.open_badge(repo)

    def close_badge(self, repo: str) -> tuple[str, str]:
        """Close our open badge PR with a note, and propose no other until asked."""
        from gradience.hub.badges import our_open_pr

        api = self.api()
        num = self._hub(lambda: our_open_pr(api, repo), repo)
        if num is None:
            return "skipped", "no open badge pull request"
        note = "Closing this badge pull request (closed by the operator). Thanks!"
        self._hub(lambda: api.change_discussion_status(repo, num, "closed", comment=note), repo)
        self.state.set_pr(repo, num, "closed", None)
        return "done", f"closed PR #{num}"

    # -- deliveries ---------------------------------------------------------------------------

    def accept(self, key: str, payload: dict[str, Any]) -> tuple[bool, str]:
        """Queue a delivery if it asks for something: (queued, reason)."""
        c = classify(payload, handle=self.config.handle or self._safe_handle())
        if c.kind is None:
            return False, c.reason
        queued = self.state.enqueue(key, c.kind, c.repo, c.work_key, {**(c.data or {})})
        if queued:
            self.wake()
        return queued, "queued" if queued else "duplicate delivery"

    def _safe_handle(self) -> str | None:
        try:
            return self.handle
        except GradienceError:
            return None


def _opted_out(tags: list[str], card: dict[str, Any]) -> bool:
    return (
        OPT_OUT_TAG in tags or card.get("gradience") is False or str(card.get("gradience")).lower() == "false"
    )


def wait_idle(worker: Worker, timeout: float = 30.0) -> bool:
    """Until the queue is empty (jobs waiting on a rate limit count as pending)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if worker.idle():
            return True
        time.sleep(0.05)
    return False
