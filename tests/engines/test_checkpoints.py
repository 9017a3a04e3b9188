import pytest

from liverseg_monai.engines.checkpoints import latest_checkpoint, require_checkpoint
from liverseg_monai.errors import InputError


def test_latest_checkpoint_by_epoch_number(tmp_path):
    assert latest_checkpoint(tmp_path) == ""
    for n in (2, 10, 9):
        (tmp_path / f"checkpoint_epoch={n}.pt").write_bytes(b"")
    assert latest_checkpoint(tmp_path).endswith("checkpoint_epoch=10.pt")


def test_require_checkpoint(tmp_path):
    with pytest.raises(InputError, match="no trained weights"):
        require_checkpoint(tmp_path / "model.pt")
    (tmp_path / "w.pt").write_bytes(b"")
    assert require_checkpoint(tmp_path / "model.pt", tmp_path / "w.pt").endswith("w.pt")


def test_train_config_round_trip(tmp_path):
    from liverseg_monai.engines.checkpoints import read_train_config, write_train_config

    assert read_train_config(tmp_path) == {}  # no record: the bundle's defaults apply
    path = write_train_config(tmp_path / "models", {"encoder": "resnet10", "patch_size": (64, 64), "n": None})
    assert path == tmp_path / "models" / "train_config.json"
    assert read_train_config(tmp_path / "models") == {"encoder": "resnet10", "patch_size": [64, 64], "n": None}
    assert read_train_config(path) == read_train_config(tmp_path / "models")
    assert [p.name for p in path.parent.iterdir()] == ["train_config.json"]  # atomic: no temporary left


def test_train_config_refuses_non_json_values_before_writing(tmp_path):
    import torch

    from liverseg_monai.engines.checkpoints import write_train_config

    with pytest.raises(TypeError, match="'device'"):
        write_train_config(tmp_path, {"encoder": "resnet10", "device": torch.device("cpu")})
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("text", ["{not json", "[1, 2]"])
def test_train_config_bad_record_names_the_file(tmp_path, text):
    from liverseg_monai.engines.checkpoints import read_train_config

    (tmp_path / "train_config.json").write_text(text)
    with pytest.raises(InputError, match="train_config.json"):
        read_train_config(tmp_path)


def test_train_config_writer_writes_when_the_trainer_starts(tmp_path):
    from ignite.engine import Engine

    from liverseg_monai.engines.checkpoints import TrainConfigWriter, read_train_config

    engine = Engine(lambda e, b: None)
    TrainConfigWriter(tmp_path / "train_config.json", {"arch": "resnet18"}).attach(engine)
    assert read_train_config(tmp_path) == {}
    engine.run([0], max_epochs=1)
    assert read_train_config(tmp_path) == {"arch": "resnet18"}
