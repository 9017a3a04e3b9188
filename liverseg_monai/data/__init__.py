"""Datalists, synthetic data and dataset preparation."""

from liverseg_monai.data.datalist import load_datalist, write_datalist

__all__ = ["load_datalist", "write_datalist"]
