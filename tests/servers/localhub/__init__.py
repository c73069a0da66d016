"""The local Hub: a loopback HTTP server that answers the requests huggingface_hub 2.x sends.

Layout (one job per module):

- ``web``: request/response plumbing, the route table, the threaded server;
- ``instrument``: fault injection and byte/request statistics for tests;
- ``storage``: content-addressed blobs, repos, commits, refs, the JSON index;
- ``accounts``: users, organisations, tokens and who may read or write what;
- ``cards``: model-card front matter and the tags the Hub derives from it;
- ``api_read``, ``api_write``, ``api_discussions``, ``api_oauth``, ``admin``: the routes (``oidc``:
  the id-token signature ``api_oauth`` shares with the local GitHub);
- ``seed``: the repos every test can rely on;
- ``app``: wires everything together.

New surfaces (Jobs, webhooks) add a module with a ``ROUTES`` list and one line in ``app``.
"""
