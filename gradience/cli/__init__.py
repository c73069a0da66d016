"""The ``gradience`` command line: thin parsers over the Python API."""
