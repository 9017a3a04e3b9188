import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA = os.path.join(os.path.dirname(REPO), "shared", "schemas", "meta_schema_20240725.json")


@pytest.fixture(scope="session")
def repo_root() -> str:
    return REPO
