"""Test and CI harness around the bundles: local servers, an Orthanc launcher, MONAI Label app folders.

``servers`` starts and stops local server processes (loopback only, free ports, bounded waits);
``orthanc_server`` starts a private Orthanc with DICOMweb (the client is the library's
``liverseg_monai.ecosystem.orthanc``); ``monailabel`` lays out a MONAI Label app folder from this
repository's bundles, starts the server from its own environment and talks to it over HTTP.
"""
