"""ONNX Runtime's TensorRT execution provider is opened with the options its users expect:
an engine and timing cache (else each session rebuilds the engine) and the precision flags
of the variant. The option names are those of ONNX Runtime's TensorRT EP
(onnxruntime.ai/docs/execution-providers/TensorRT-ExecutionProvider.html, "Configurations";
OrtTensorRTProviderOptionsV2)."""
import pytest

from iaunet.runtime import runners

EP_OPTION_NAMES = {"trt_engine_cache_enable", "trt_engine_cache_path", "trt_timing_cache_enable",
                   "trt_timing_cache_path", "trt_fp16_enable", "trt_int8_enable"}


@pytest.fixture
def all_providers(monkeypatch):
    """An onnxruntime build that lists every provider (onnxruntime-gpu on a device)."""
    import onnxruntime
    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])


@pytest.mark.parametrize("precision, fp16, int8", [("fp32", False, False), ("fp16", True, False),
                                                   ("int8", True, True)])
def test_the_tensorrt_ep_gets_a_cache_and_the_variants_precision(all_providers, tmp_path, precision, fp16, int8):
    providers = runners.ort_providers("tensorrt", precision, tmp_path)
    (name, options), *rest = providers
    assert name == "TensorrtExecutionProvider" and rest == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert set(options) == EP_OPTION_NAMES
    assert options["trt_engine_cache_enable"] and options["trt_timing_cache_enable"]
    assert options["trt_engine_cache_path"] == options["trt_timing_cache_path"]
    assert options["trt_engine_cache_path"].startswith(str(tmp_path))
    assert (options["trt_fp16_enable"], options["trt_int8_enable"]) == (fp16, int8)


def test_other_devices_get_plain_providers(all_providers):
    assert runners.ort_providers("cuda") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert runners.ort_providers("cpu") == ["CPUExecutionProvider"]


def test_the_runner_reads_the_variant_from_the_files_metadata(image_onnx):
    assert runners._precision_of(image_onnx) == "fp32" and runners._precision_of(image_onnx.read_bytes()) == "fp32"


def test_two_models_of_one_name_get_their_own_engine_cache(all_providers, tmp_path, image_onnx, exported):
    # ONNX Runtime names a cached engine by the file's name and node names, not its weights: a
    # retrained model.onnx must not find the old model's engine
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    first, second = tmp_path / "a" / "model.onnx", tmp_path / "b" / "model.onnx"
    first.write_bytes(image_onnx.read_bytes())
    second.write_bytes(exported["native"].path.read_bytes())
    paths = [runners.ort_providers("tensorrt", "fp32", tmp_path / "cache", runners._digest_of(p))[0][1]
             ["trt_engine_cache_path"] for p in (first, second, image_onnx)]
    assert paths[0] != paths[1] and paths[0] == paths[2]  # by content, wherever the file lies
    assert all(p.startswith(str(tmp_path / "cache")) for p in paths)


def test_the_tensorrt_layout_is_refused_before_a_session_opens(tmp_path, image_onnx, monkeypatch):
    # with the TensorRT EP a session is a whole engine build: the refusal comes first
    import onnx
    from iaunet.core.errors import IAUnetError
    model = onnx.load(str(image_onnx))
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, "iaunet.consumer": "tensorrt"})
    path = tmp_path / "m.int8.trt.onnx"
    onnx.save(model, str(path))
    opened = []
    monkeypatch.setattr(runners.OnnxRuntimeRunner, "_session", lambda *a: opened.append(a))
    with pytest.raises(IAUnetError, match="TensorRT layout"):
        runners.OnnxRuntimeRunner(path)
    assert not opened
