"""Spectral maths: singular values from factors, metrics of spectra, rank policies."""
