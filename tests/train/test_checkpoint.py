import torch
import pytest

from iaunet.core.errors import IAUnetError
from iaunet.train import create_model, load_checkpoint, save_checkpoint


def test_round_trip_is_weights_only_loadable_and_exact(tmp_path):
    model = create_model("iaunet_r18", num_classes=5, height=64, width=32).eval()
    path = save_checkpoint(tmp_path / "m.pt", model)
    raw = torch.load(path, weights_only=True)
    assert raw["config"]["name"] == "iaunet_r18" and raw["config"]["num_classes"] == 5
    loaded, config = load_checkpoint(path)
    assert not loaded.training and config == model.config
    x = torch.randn(2, 3, 64, 32)
    assert torch.equal(loaded(x), model(x))
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temp file left behind


def test_config_that_does_not_match_the_weights(tmp_path):
    model = create_model("iaunet_r18", num_classes=5)
    path = save_checkpoint(tmp_path / "m.pt", model)
    raw = torch.load(path, weights_only=True)
    raw["config"]["num_classes"] = 7
    del raw["tensors_sha256"]  # as a file written before checkpoints carried a checksum
    torch.save(raw, path)
    with pytest.raises(IAUnetError, match=r"do not match its config .*classifier\.weight"):
        load_checkpoint(path)


def test_foreign_files(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(IAUnetError, match="not an IAUnet checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(IAUnetError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "text.pt")
    with pytest.raises(IAUnetError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_bytes_changed_on_disk_are_refused_as_corrupted(tmp_path):
    model = create_model("iaunet_r18", num_classes=5, height=64, width=32)
    path = save_checkpoint(tmp_path / "m.pt", model)
    data = bytearray(path.read_bytes())
    start = len(data) // 2
    data[start:start + 4096] = torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0),
                                             dtype=torch.uint8).numpy().tobytes()
    path.write_bytes(bytes(data))
    with pytest.raises(IAUnetError, match=r"m\.pt .*corrupted"):
        load_checkpoint(path)


def test_an_edited_weight_is_refused_and_an_old_file_without_checksum_loads(tmp_path):
    import logging
    model = create_model("iaunet_r18", num_classes=5, height=64, width=32)
    path = save_checkpoint(tmp_path / "m.pt", model)
    raw = torch.load(path, weights_only=True)
    raw["state_dict"]["classifier.weight"][0, 0] += 1.0
    torch.save(raw, path)
    with pytest.raises(IAUnetError, match="is corrupted"):
        load_checkpoint(path)
    del raw["tensors_sha256"]
    torch.save(raw, path)
    notes = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: notes.append(record.getMessage())
    logger = logging.getLogger("iaunet.train")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        loaded, _ = load_checkpoint(path)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert any("carries no checksum" in n for n in notes)
    assert torch.equal(loaded.state_dict()["classifier.weight"], raw["state_dict"]["classifier.weight"])


def test_the_model_id_names_the_weights_not_the_file(tmp_path):
    """Two files of the same weights (another run's timings, another order of entries) are
    one model; a changed weight or config is another."""
    from iaunet.core.files import sha256_file
    from iaunet.train.checkpoint import checkpoint_model_id
    torch.manual_seed(0)
    model = create_model("iaunet_r18", num_classes=5, height=64, width=32)
    first = save_checkpoint(tmp_path / "a.pt", model, extra={"epoch_seconds": [12.5, 11.9]})
    second = save_checkpoint(tmp_path / "b.pt", model, extra={"epoch_seconds": [13.1, 12.0]})
    raw = torch.load(second, weights_only=True)
    raw["state_dict"] = dict(reversed(list(raw["state_dict"].items())))
    raw["config"] = dict(reversed(list(raw["config"].items())))
    torch.save(raw, tmp_path / "c.pt")
    assert len({sha256_file(p) for p in (first, second, tmp_path / "c.pt")}) == 3
    ids = {checkpoint_model_id(p) for p in (first, second, tmp_path / "c.pt")}
    assert len(ids) == 1 and len(next(iter(ids))) == 64
    raw["state_dict"]["classifier.weight"][0, 0] += 1.0
    del raw["tensors_sha256"]  # as a file written before checkpoints carried a digest: computed
    torch.save(raw, tmp_path / "d.pt")
    raw["state_dict"]["classifier.weight"][0, 0] -= 1.0
    raw["config"]["resize_filter"] = "bicubic"
    torch.save(raw, tmp_path / "e.pt")
    assert len(ids | {checkpoint_model_id(tmp_path / "d.pt"), checkpoint_model_id(tmp_path / "e.pt")}) == 3
