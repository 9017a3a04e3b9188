"""Inferers beyond MONAI's: patch-wise whole-slide inference (:mod:`liverseg_monai.inferers.slide`)."""
