"""The Gradience Hub bot: audit badges on model cards and audit-diff comments on Hub PRs.

Webhook deliveries are accepted at once and queued in SQLite (:mod:`.state`); one worker
(:mod:`.worker`) turns each into at most one action on the Hub, through the core's badge
pipeline (:mod:`gradience.hub.badges`) and audit diffs (:mod:`gradience.diff`). The HTTP
receiver is :mod:`.server`; ``gradience bot serve`` runs both. See ``docs/bot.md``.
"""
