"""A small DICOMweb client: STOW-RS store, WADO-RS retrieve, QIDO-RS search (Orthanc or any PACS).

Plain ``requests``; ``base_url`` is the server's DICOMweb root (for Orthanc
``http://HOST:PORT/dicom-web``). For example, push a bundle's DICOM-SEG next to its CT and read it
back (see docs/dicom.md)::

    stow(base_url, ["pred_seg.dcm"])
    seg = search_series(base_url, Modality="SEG", StudyInstanceUID=study)[0]
    retrieve_series(base_url, study, tag_value(seg, "0020000E"), "seg_back/")

A private Orthanc for the tests and a workstation is started by ``tools.ecosystem.orthanc_server``.
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from io import BytesIO
from pathlib import Path

import pydicom
import requests

from liverseg_monai.io.atomic import atomic_path

DICOM_PART = 'multipart/related; type="application/dicom"'
# DICOM JSON tags of a STOW-RS response
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"


class DicomWebError(RuntimeError):
    """A DICOMweb request that the server refused or answered incompletely."""


def _dicom_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        files.extend(sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p])
    return files


def stow(base_url: str, paths: Iterable[str | os.PathLike], timeout_s: float = 60.0) -> list[str]:
    """Store DICOM files with STOW-RS (``POST {base_url}/studies``); returns the stored SOPInstanceUIDs.

    Args:
        base_url: the DICOMweb root.
        paths: DICOM files, or folders whose files are all sent.

    Raises:
        DicomWebError: the server answered an error status or listed failed instances.
    """
    files = _dicom_files(paths)
    if not files:
        raise DicomWebError(f"nothing to store: no files in {list(map(str, paths))}")
    boundary = uuid.uuid4().hex
    body = bytearray()
    for f in files:
        body += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        body += f.read_bytes() + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    headers = {"Content-Type": f"{DICOM_PART}; boundary={boundary}", "Accept": "application/dicom+json"}
    response = requests.post(f"{base_url}/studies", data=bytes(body), headers=headers, timeout=timeout_s)
    if response.status_code not in (200, 202):
        raise DicomWebError(f"STOW-RS to {base_url} failed: HTTP {response.status_code}: {response.text[:500]}")
    result = response.json() if response.content else {}
    failed = result.get(FAILED_SOP_SEQUENCE, {}).get("Value", [])
    if failed:
        raise DicomWebError(f"STOW-RS to {base_url}: {len(failed)} of {len(files)} instances failed: {failed[:3]}")
    stored = [item.get("00081155", {}).get("Value", [None])[0]
              for item in result.get(REFERENCED_SOP_SEQUENCE, {}).get("Value", [])]
    if len(stored) != len(files):
        raise DicomWebError(f"STOW-RS to {base_url}: stored {len(stored)} of {len(files)} instances")
    return stored


def _multipart_parts(content: bytes, content_type: str) -> list[bytes]:
    """The bodies of a ``multipart/related`` response."""
    params = dict(p.strip().split("=", 1) for p in content_type.split(";")[1:] if "=" in p)
    boundary = params.get("boundary", "").strip('"')
    if not boundary:
        raise DicomWebError(f"multipart response without boundary: {content_type!r}")
    parts = []
    for chunk in content.split(b"--" + boundary.encode())[1:]:
        if chunk.startswith(b"--"):
            break
        _, sep, body = chunk.partition(b"\r\n\r\n")
        if not sep:
            continue
        parts.append(body[:-2] if body.endswith(b"\r\n") else body)
    return parts


def retrieve_series(base_url: str, study_uid: str, series_uid: str, out_folder: str | os.PathLike,
                    timeout_s: float = 60.0) -> list[Path]:
    """Retrieve a series with WADO-RS into ``out_folder`` (one ``SOPInstanceUID.dcm`` per instance).

    Raises:
        DicomWebError: an error status, or a response without DICOM instances.
    """
    url = f"{base_url}/studies/{study_uid}/series/{series_uid}"
    response = requests.get(url, headers={"Accept": f"{DICOM_PART}; transfer-syntax=*"}, timeout=timeout_s)
    if response.status_code != 200:
        raise DicomWebError(f"WADO-RS {url} failed: HTTP {response.status_code}: {response.text[:500]}")
    parts = _multipart_parts(response.content, response.headers.get("Content-Type", ""))
    if not parts:
        raise DicomWebError(f"WADO-RS {url} returned no instances")
    out = Path(out_folder)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for part in parts:
        sop_uid = pydicom.dcmread(BytesIO(part), stop_before_pixels=True).SOPInstanceUID
        path = out / f"{sop_uid}.dcm"
        with atomic_path(path) as tmp:
            Path(tmp).write_bytes(part)
        written.append(path)
    return written


def search_series(base_url: str, timeout_s: float = 30.0, **query: str) -> list[dict]:
    """QIDO-RS ``GET {base_url}/series?KEY=VALUE``: the matching series as DICOM JSON dicts."""
    response = requests.get(f"{base_url}/series", params=query, headers={"Accept": "application/dicom+json"},
                            timeout=timeout_s)
    if response.status_code != 200:
        raise DicomWebError(f"QIDO-RS {base_url}/series failed: HTTP {response.status_code}: {response.text[:500]}")
    return response.json() if response.content else []


def tag_value(item: dict, tag: str) -> str | None:
    """First value of ``tag`` (8 hex digits) in a DICOM JSON dict."""
    values = item.get(tag, {}).get("Value", [])
    return str(values[0]) if values else None
