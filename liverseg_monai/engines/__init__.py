"""Helpers for MONAI engines: handlers and checkpoint discovery used by the bundle configs."""
