"""The ecosystem dataset: discover public LoRA adapters on the Hub, audit them at scale, and
publish the results as a Hub dataset (``adapters`` and ``layers`` parquet tables plus a card).

Modules, one job each:

- ``statuses``: the fixed set of row statuses, derived from the core's error types;
- ``discovery``: listing passes over ``list_models(filter="peft")`` and adapter folders;
- ``state``: the crawl's SQLite state (WAL, one transaction per result): what to re-audit;
- ``crawl``: bounded-concurrency audits of the candidates, with progress and sharding;
- ``schema`` / ``dataset``: the parquet tables' Arrow schema and the dataset folder;
- ``stats`` / ``card``: the study's tables from the parquet (DuckDB) and the dataset card;
- ``percentile``: where one adapter stands among all, same r and same family;
- ``publish``: one atomic commit per crawl to a Hub dataset repo;
- ``fanout``: shards crawled on HF Jobs, merged and published in one commit;
- ``status``: ``gradience crawl status`` from the state and the scheduler's job store.

Nothing here is imported by ``import gradience``; pyarrow, DuckDB and huggingface_hub load
only when a crawl or a query runs (the ``bot`` extra installs them).
"""
