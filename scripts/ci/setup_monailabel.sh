#!/usr/bin/env bash
# Creates .venv-monailabel: MONAI Label 0.8.5 plus liverseg_monai, for tests/ecosystem/test_monailabel.py.
#
# MONAI Label needs its own environment: 0.8.5 (the current release) depends on pydicom-seg, which pins
# numpy<2, and it breaks on import with pydicom 3, so pydicom, dicomweb-client and pynetdicom are pinned
# to the versions it was released with. monailabel is installed without its dependency list (that list
# has sam2, only used with `--conf sam2 true`, whose resolution builds sdists for many minutes); its
# runtime dependencies are listed below. liverseg_monai is installed editable without its dependencies
# (highdicom wants pydicom 3); the bundles' inference and training need only the packages listed.
#
# torch and ITK: when the main .venv holds the project's torch build, their files are linked into this
# environment (a .pth entry after this environment's own site-packages, so this environment's numpy<2
# wins) instead of installing the same multi-GB wheels a second time. Set MONAILABEL_OWN_TORCH=1 to
# install torch into this environment instead.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${MONAILABEL_VENV:-.venv-monailabel}
MAIN_VENV=${MAIN_VENV:-.venv}
TORCH_PINS="torch==2.14.1 torchvision==0.29.1"
STAMP="$VENV/.installed"
if [ -f "$STAMP" ]; then
    echo "$VENV already set up"
    exit 0
fi
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip install -q"
SITE=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")

if [ -z "${MONAILABEL_OWN_TORCH:-}" ] && "$MAIN_VENV/bin/python" -c "import importlib.metadata as m; assert m.version('torch') == '2.14.1' and m.version('torchvision') == '0.29.1'" 2>/dev/null; then
    # link torch, torchvision, ITK and their dependency closure (without numpy and pillow) from the main venv
    "$MAIN_VENV/bin/python" - "$VENV/torch-site" "$SITE/liverseg-torch.pth" <<'PY'
import importlib.metadata as md
import os
import re
import sys
from pathlib import Path

target, pth = Path(sys.argv[1]), Path(sys.argv[2])
skip = {"numpy", "pillow"}
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()  # noqa: E731
# torch's CUDA libraries come through extras (cuda-toolkit[...]): take every nvidia-*/cuda-* distribution;
# ITK (1.5 GB, pure-Python numpy use, works with numpy 1.26) is linked too
todo = ["torch", "torchvision"] + [d.metadata["Name"] for d in md.distributions()
                                   if norm(d.metadata["Name"]).startswith(("nvidia-", "cuda-", "itk"))]
seen = set()
while todo:
    name = norm(todo.pop())
    if name in seen or name in skip:
        continue
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        continue
    seen.add(name)
    for req in dist.requires or []:
        if "extra ==" in req:
            continue
        todo.append(re.split(r"[\s;<>=!~\[(]", req.strip(), maxsplit=1)[0])
    site = Path(dist.locate_file(""))
    for f in dist.files or []:
        parts = Path(f).parts
        if not parts or parts[0] == "..":
            continue
        src, dst = site / parts[0], target / parts[0]
        if not dst.exists() and src.exists():
            target.mkdir(parents=True, exist_ok=True)
            os.symlink(src.resolve(), dst)
pth.write_text(str(target.resolve()) + "\n")
print("linked from the main venv:", ", ".join(sorted(seen)))
PY
else
    $PIP $TORCH_PINS
fi
$PIP --upgrade pip
$PIP --no-deps monailabel==0.8.5
$PIP "numpy<2" $TORCH_PINS "monai[nibabel,skimage,pillow,ignite,tensorboard,itk,fire,tqdm,psutil]>=1.6,<1.7" \
    pydicom==2.4.4 dicomweb-client==0.59.1 pynetdicom==2.0.2 pydicom-seg python-gdcm pynrrd numpymaxflow \
    "uvicorn>=0.29" "pydantic>=2.7" "pydantic-settings>=2.2.1" python-dotenv "fastapi>=0.110.2" python-multipart \
    httpx schedule timeloop expiringdict expiring_dict cachetools watchdog girder-client einops filelock \
    passlib pyjwt bcrypt shapely requests requests-toolbelt urllib3 scikit-learn google-auth \
    nibabel "itk>=5.3" scikit-image scipy pyyaml pytorch-ignite tqdm tensorboard fire tifffile imagecodecs \
    matplotlib jsonschema pandas
$PIP -e . --no-deps
"$VENV/bin/python" -c "import monailabel, torch, numpy, liverseg_monai.io.readers; print('monailabel', monailabel.__version__, 'torch', torch.__version__, 'numpy', numpy.__version__)"
touch "$STAMP"
