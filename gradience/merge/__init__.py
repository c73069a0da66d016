"""Merge audits (will two adapters fight?) and merges of adapter-only repos."""
