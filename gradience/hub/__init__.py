"""The only place Gradience talks to the Hub: references, ranged reads, a byte-range cache."""
