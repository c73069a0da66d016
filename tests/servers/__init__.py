"""Loopback servers that speak third-party protocols (the Hugging Face Hub, later GitHub), so the
suite can drive the real client libraries without the internet."""
