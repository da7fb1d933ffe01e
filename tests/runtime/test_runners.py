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
