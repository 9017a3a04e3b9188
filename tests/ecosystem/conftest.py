"""Fixtures that start real servers (Orthanc, MONAI Label) on 127.0.0.1 with free ports; always stopped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tools.ecosystem.orthanc_server import OrthancServer, find_orthanc

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    """A private Orthanc with the DICOMweb plugin; skips when Debian's orthanc/orthanc-dicomweb are absent."""
    exe, plugin = find_orthanc()
    if exe is None or plugin is None:
        pytest.skip("orthanc / orthanc-dicomweb not installed: run scripts/ci/setup_orthanc.sh")
    server = OrthancServer(tmp_path_factory.mktemp("orthanc"), exe, plugin)
    try:
        server.start(timeout_s=60)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def monailabel_python() -> Path:
    """The MONAI Label environment's Python; skips when ``.venv-monailabel`` is not set up."""
    from tools.ecosystem.monailabel import DEFAULT_VENV, monailabel_python

    python = monailabel_python(DEFAULT_VENV)
    if python is None:
        pytest.skip(f"MONAI Label environment {DEFAULT_VENV} not set up: run scripts/ci/setup_monailabel.sh")
    return python
