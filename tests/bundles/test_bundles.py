"""Every bundle through the shared harness (see harness.py)."""

import pytest

from tests.bundles import harness

BUNDLES = harness.bundle_names()


def test_every_bundle_has_a_recipe():
    from tools.recipes import list_recipes

    missing = sorted(set(BUNDLES) - set(list_recipes()))
    assert not missing, f"bundles without tools/recipes/<name>.yaml: {missing}"


@pytest.mark.parametrize("bundle", BUNDLES)
def test_metadata(bundle, tmp_path):
    harness.check_metadata(bundle, tmp_path)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_net_in_out(bundle, tmp_path):
    harness.check_net_in_out(bundle, tmp_path)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_export_torchscript(bundle, tmp_path):
    harness.check_export(bundle, tmp_path)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_train_infer_evaluate(bundle, tmp_path):
    harness.run_stages(bundle, tmp_path)
