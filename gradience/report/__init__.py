"""Renderings of result dicts: terminal tables now; Markdown and plots with later surfaces."""
