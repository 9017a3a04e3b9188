"""liverseg_monai: the shared parts of the liverseg-monai MONAI bundles.

Sub-packages are organised by concern: ``data`` (datalists, synthetic data, dataset preparation),
``io`` (DICOM, NIfTI and slide reading/writing), ``networks`` (nets and blocks), ``losses``,
``transforms`` (post-processing as pure functions wrapped as MONAI transforms), ``metrics``,
``ssl`` (self-supervised pretraining) and ``engines`` (helpers for MONAI engines).
"""

__version__ = "0.1.0"

from liverseg_monai.errors import install_excepthook as _install_excepthook

_install_excepthook()
