#!/usr/bin/env bash
# Installs the Orthanc DICOM server and its DICOMweb plugin (Debian packages) for tests/ecosystem/test_orthanc.py.
# The packaged service is not started: the test starts its own Orthanc on loopback with a generated config.
set -euo pipefail
if command -v Orthanc >/dev/null 2>&1 && dpkg -s orthanc-dicomweb >/dev/null 2>&1; then
    echo "orthanc and orthanc-dicomweb already installed"
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
# policy-rc.d keeps the package's post-install script from starting the system service.
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends orthanc orthanc-dicomweb
dpkg -L orthanc-dicomweb | grep -E '\.so' || true
