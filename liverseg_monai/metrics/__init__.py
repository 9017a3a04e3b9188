"""Metrics beyond MONAI's: per-case tables of the papers' measures."""
