"""An engine's sidecar against the expected model and the machine: refused with the
sidecar's reason before TensorRT deserializes it, the model before TensorRT or pycuda is
even imported (plain Python, so tested here with sidecars)."""
import json
import sys

import pytest

from iaunet.core.errors import IAUnetError
from iaunet.runtime.engine_card import FIELDS, Machine, other_gpu_model, read_sidecar, sidecar_path
from iaunet.runtime.trt_runner import check_engine

ORIN = Machine("Orin", 87, "10.3.0")
CKPT = "ab" * 32


def _card(**changes):
    card = {"format": 1, "tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": 87,
            "precision": "int8", "profile": {"min": [1, 3, 256, 128], "opt": [8, 3, 256, 128], "max": [16, 3, 256, 128]},
            "plugin_route": "python", "plugins": ["iaunet::IAUChannelAffinity"], "onnx_sha256": "cd" * 32,
            "toolkit_version": "0.1.0", "metadata": {"iaunet.checkpoint_sha256": CKPT}}
    card.update(changes)
    return card


def _engine(tmp_path, card):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\0" * 64)
    sidecar_path(engine).write_text(json.dumps(card))
    return engine


def test_a_matching_machine_is_accepted():
    check_engine("m.engine", _card(), 0, None, ORIN)
    check_engine("m.engine", _card(), 0, CKPT, Machine("Orin", 87, "10.3.0.26"))


@pytest.mark.parametrize("machine, expect, words", [
    (Machine("NVIDIA H100 80GB HBM3", 90, "10.3.0"), None, ["sm_87 (Orin)", "sm_90 (NVIDIA H100", "iaunet build"]),
    (Machine("Orin", 87, "10.13.3"), None, ["TensorRT 10.3.0", "10.13.3", "iaunet build"]),
    (Machine("Orin", 87, "10.3.1"), None, ["TensorRT 10.3.0", "10.3.1"]),
    (ORIN, "ef" * 32, ["model abababababab", "model efefefefefef was expected"]),
])
def test_mismatches_are_refused_with_the_reason(machine, expect, words):
    with pytest.raises(IAUnetError) as refused:
        check_engine("m.engine", _card(), 0, expect, machine)
    reason = str(refused.value)
    assert reason.startswith("m.engine: ") and all(w in reason for w in words), reason


def test_runner_refuses_before_importing_tensorrt(tmp_path):
    from iaunet.runtime.trt_runner import TensorRTRunner
    engine = _engine(tmp_path, _card())
    before = {m for m in sys.modules if m.split(".")[0] in ("tensorrt", "pycuda")}
    with pytest.raises(IAUnetError, match="built for sm_87 .* this GPU is sm_90"):
        TensorRTRunner(engine, machine=Machine("H100", 90, "10.3.0"))
    assert {m for m in sys.modules if m.split(".")[0] in ("tensorrt", "pycuda")} == before


def test_another_model_is_refused_before_the_machine_is_read(tmp_path):
    """No machine is given, so reading it would import TensorRT (absent here: 'not installed')."""
    from iaunet.runtime.trt_runner import TensorRTRunner
    engine = _engine(tmp_path, _card())
    before = {m for m in sys.modules if m.split(".")[0] in ("tensorrt", "pycuda")}
    with pytest.raises(IAUnetError, match="embeds for model abababababab but model efefefefefef was expected"):
        TensorRTRunner(engine, expect_model="ef" * 32)
    assert {m for m in sys.modules if m.split(".")[0] in ("tensorrt", "pycuda")} == before


def test_another_gpu_model_of_the_same_architecture_is_a_warning():
    """TensorRT loads an engine on another GPU model of the same SM with a warning; so do we."""
    rtx = Machine("NVIDIA GeForce RTX 4090", 89, "10.3.0")
    card = _card(gpu_name="NVIDIA L40S", compute_capability=89)
    check_engine("m.engine", card, 0, None, rtx)  # not refused
    warning = other_gpu_model(card, rtx)
    assert warning and "NVIDIA L40S" in warning and "RTX 4090" in warning and "sm_89" in warning
    assert other_gpu_model(_card(), ORIN) is None


def test_the_runner_logs_the_other_gpu_model_warning(tmp_path, caplog):
    card = _card(gpu_name="NVIDIA L40S", compute_capability=89)
    with caplog.at_level("WARNING", logger="iaunet.runtime"):
        check_engine("m.engine", card, 0, CKPT, Machine("NVIDIA GeForce RTX 4090", 89, "10.3.0"))
        check_engine("m.engine", _card(), 0, CKPT, ORIN)
    assert [r.getMessage() for r in caplog.records] == [
        "m.engine: " + other_gpu_model(card, Machine("NVIDIA GeForce RTX 4090", 89, "10.3.0"))]


@pytest.mark.parametrize("sidecar, message", [
    (None, "has no sidecar"),
    ("{not json", "not readable JSON"),
    (json.dumps({"format": 1}), "lacks tensorrt_version"),
    (json.dumps(_card(format=7)), "has format 7"),
])
def test_bad_sidecars_are_one_error(tmp_path, sidecar, message):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"x")
    if sidecar is not None:
        sidecar_path(engine).write_text(sidecar)
    with pytest.raises(IAUnetError, match=message):
        read_sidecar(engine)


def test_every_field_is_required(tmp_path):
    for field in FIELDS:
        card = _card()
        del card[field]
        with pytest.raises(IAUnetError, match=f"lacks {field}"):
            read_sidecar(_engine(tmp_path, card))


@pytest.mark.parametrize("field, value", [("metadata", None), ("metadata", "iaunet"), ("metadata", ["a"]),
                                          ("metadata", {"iaunet.config": 3}), ("compute_capability", "87"),
                                          ("profile", None), ("gpu_name", None)])
def test_a_sidecar_field_of_the_wrong_type_is_one_line(tmp_path, field, value):
    from iaunet.runtime.trt_runner import TensorRTRunner
    engine = _engine(tmp_path, _card(**{field: value}))
    with pytest.raises(IAUnetError, match=f"sidecar .*m.engine.json has {field} .*; expected "):
        TensorRTRunner(engine, expect_model=CKPT, machine=ORIN)


def test_engine_bytes_that_are_not_the_sidecars_are_refused(tmp_path, iaunet_notes):
    import hashlib
    from iaunet.runtime.trt_runner import check_engine_bytes
    good = b"ftrt" + bytes(range(60))
    engine = _engine(tmp_path, _card(engine_sha256=hashlib.sha256(good).hexdigest()))
    engine.write_bytes(good)
    assert check_engine_bytes(engine, read_sidecar(engine)) == good
    engine.write_bytes(good[:-8] + bytes(8))
    with pytest.raises(IAUnetError, match=r"m\.engine: the engine's bytes do not match the SHA-256"):
        check_engine_bytes(engine, read_sidecar(engine))
    check_engine_bytes(engine, _card())  # a sidecar from before the digest: loaded, with a note
    assert any("carries no engine digest" in note for note in iaunet_notes)


def test_the_model_id_or_the_older_checkpoint_id_is_accepted(tmp_path):
    new = _card(metadata={"iaunet.model_id": "ef" * 32, "iaunet.checkpoint_sha256": CKPT})
    check_engine("m.engine", new, 0, "ef" * 32, ORIN)
    check_engine("m.engine", new, 0, CKPT, ORIN)  # a gallery embedded before model ids named the weights
    with pytest.raises(IAUnetError, match="model efefefefefef but model 121212121212 was expected"):
        check_engine("m.engine", new, 0, "12" * 32, ORIN)
