import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA = os.path.join(os.path.dirname(REPO), "shared", "schemas", "meta_schema_20240725.json")


@pytest.fixture(scope="session")
def repo_root() -> str:
    return REPO


@pytest.fixture(scope="session", autouse=True)
def _temp_files_under_basetemp(tmp_path_factory):
    """Point ``TMPDIR`` (inherited by the bundle subprocesses) into pytest's base temp directory, so
    temporary files that a library leaves behind (torch.onnx export writes ~130 MB ``tmp*.data`` files and
    does not remove them) are removed with the rest of the test run instead of filling ``/tmp``."""
    import tempfile

    tmp = tmp_path_factory.mktemp("tmpdir")
    old_env, old_tempdir = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"], tempfile.tempdir = str(tmp), str(tmp)
    yield
    tempfile.tempdir = old_tempdir
    if old_env is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = old_env
