#!/usr/bin/env bash
# Creates .venv-monailabel: MONAI Label 0.8.5 plus liverseg_monai, for tests/ecosystem/test_monailabel.py.
#
# MONAI Label needs its own environment: 0.8.5 (the current release) pulls pydicom-seg, which pins numpy<2,
# and it breaks on import with pydicom 3, so pydicom, dicomweb-client and pynetdicom are pinned to the
# versions it was released with. liverseg_monai is installed editable without its dependencies (highdicom
# wants pydicom 3); the bundles' inference and training code needs only the packages listed below.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${MONAILABEL_VENV:-.venv-monailabel}
STAMP="$VENV/.installed"
if [ -f "$STAMP" ]; then
    echo "$VENV already set up"
    exit 0
fi
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip install -q"
$PIP --upgrade pip
# torch first, at the project's pinned (locally available) build, so nothing below pulls another one
$PIP torch==2.14.1 torchvision==0.29.1
# monailabel itself without its dependency list: that list has sam2 (only needed with `--conf sam2 true`,
# and resolving it builds sdists for many minutes); its other runtime dependencies are listed here.
$PIP --no-deps monailabel==0.8.5
$PIP "numpy<2" "monai[nibabel,skimage,pillow,ignite,tensorboard,itk,fire,tqdm,psutil]>=1.6,<1.7" \
    pydicom==2.4.4 dicomweb-client==0.59.1 pynetdicom==2.0.2 pydicom-seg pynrrd numpymaxflow \
    "uvicorn>=0.29" "pydantic>=2.7" "pydantic-settings>=2.2.1" python-dotenv "fastapi>=0.110.2" python-multipart \
    httpx schedule timeloop expiringdict expiring_dict cachetools watchdog girder-client einops filelock \
    passlib pyjwt bcrypt shapely requests requests-toolbelt urllib3 scikit-learn google-auth \
    nibabel "itk>=5.3" scikit-image scipy pyyaml pytorch-ignite tqdm tensorboard fire tifffile imagecodecs \
    matplotlib jsonschema pandas
$PIP -e . --no-deps
"$VENV/bin/python" -c "import monailabel, liverseg_monai.io.readers, numpy; print('monailabel', monailabel.__version__, 'numpy', numpy.__version__)"
touch "$STAMP"
