"""The GitHub Action's runtime (``gradience action run``): audit the adapters a pull request
touches at its base and head, keep one comment current, write the job summary and a JSON
report, and gate the step on rules.

Modules: ``runner`` (the runner's environment, event and workflow commands), ``settings``
(inputs), ``adapters`` (what changed, files at a commit), ``compare`` (one result per adapter,
via :func:`gradience.diff.diff`), ``render`` (comment and summary Markdown), ``github`` (GitHub's REST
API over httpx2, imported lazily), ``bench`` (the GPU bench on HF Jobs) and ``run`` (one pass). See
``docs/action.md``.
"""
