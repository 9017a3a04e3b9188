"""Glue to the tools around MONAI that the bundles are run with: Auto3DSeg and DICOMweb servers.

``auto3dseg`` holds what the Auto3DSeg algorithm template (``auto3dseg/``) runs; ``orthanc`` is a small
DICOMweb client (STOW-RS, WADO-RS, QIDO-RS) for pushing results to a PACS. Server launchers and the
MONAI Label app layout used by the tests are tooling: ``tools/ecosystem``.
"""
