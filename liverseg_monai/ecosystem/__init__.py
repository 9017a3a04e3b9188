"""Glue to the tools around MONAI that the bundles are run with: MONAI Label, Auto3DSeg and DICOM servers.

``servers`` starts and stops local server processes (loopback only, free ports, bounded waits);
``orthanc`` is a small DICOMweb client (STOW-RS, WADO-RS, QIDO-RS) and an Orthanc launcher;
``monailabel`` lays out a MONAI Label app folder from this repository's bundles.
"""
