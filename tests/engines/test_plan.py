"""Engine build decisions for every supported TensorRT, and Polygraphy's loader chain
constructed with our keywords (its loaders are lazy: constructing one checks each keyword
against the installed Polygraphy's signature without touching TensorRT)."""
import json
import re

import pytest

from iaunet.core.errors import IAUnetError
from iaunet.engines.plan import (BuildOptions, check_legacy_int8, choose_route, parse_batch, plan_build,
                                 profile_shapes, strip_functions_for_parser, version_tuple)
from iaunet.runtime.engine_card import FIELDS, Machine
from iaunet.runtime.model_card import ModelCard

CARD = ModelCard(name="iaunet_r50", variant="image", height=256, width=128, frames=0, embedding_dim=2048,
                 resize_filter="bilinear", model_id="ab" * 32, props={"iaunet.checkpoint_sha256": "ab" * 32})
VIDEO = ModelCard(name="iaunet_video_r50", variant="video", height=256, width=128, frames=4, embedding_dim=2048,
                  resize_filter="bilinear", model_id="", props={})
ORIN = Machine("Orin", 87, "10.3.0")
PTX = "ptx"  # a plugin graph's build names its PTX folder


@pytest.mark.parametrize("version, asked, route", [
    ((10, 3), "auto", "python"), ((10, 8), "auto", "python"), ((10, 9), "auto", "aot"),
    ((10, 13), "auto", "aot"), ((10, 16), "auto", "aot"), ((11, 4), "auto", "aot"),
    ((10, 13), "python", "python"), ((11, 0), "aot", "aot"),
])
def test_route_per_version(version, asked, route):
    assert choose_route(version, asked, has_plugins=True) == route


@pytest.mark.parametrize("version, asked, has_plugins, words", [
    ((10, 3), "aot", True, "no AOT plugins (from 10.9)"),
    ((10, 2), "auto", True, "too old"),
    ((10, 13), "native", True, "export with --mode native"),
    ((10, 13), "python", False, "no IAU plugin nodes"),
    ((10, 13), "fused", True, "unknown plugin route"),
])
def test_impossible_routes_are_refused(version, asked, has_plugins, words):
    with pytest.raises(IAUnetError, match=re.escape(words)):
        choose_route(version, asked, has_plugins)


def test_native_graphs_take_the_native_route_everywhere():
    assert all(choose_route(v, "auto", False) == "native" for v in [(10, 3), (10, 13), (11, 4)])


def test_function_stripping_only_where_the_parser_prefers_functions():
    assert strip_functions_for_parser((10, 3), "python") and strip_functions_for_parser((10, 6), "python")
    assert not strip_functions_for_parser((10, 7), "python") and not strip_functions_for_parser((10, 13), "aot")
    assert not strip_functions_for_parser((10, 3), "native")


def test_legacy_int8_only_before_11():
    check_legacy_int8((10, 3))
    check_legacy_int8((10, 16))
    with pytest.raises(IAUnetError, match="removed in 11.0"):
        check_legacy_int8((11, 0))


@pytest.mark.parametrize("text, expected", [("1,8,32", (1, 8, 32)), ("4", (4, 4, 4)), ("1,1,1", (1, 1, 1))])
def test_batch_flags(text, expected):
    assert parse_batch(text) == expected


@pytest.mark.parametrize("text", ["0,8,32", "8,4,32", "1,8", "a,b,c", "1,8,5000", ""])
def test_bad_batch_flags(text):
    with pytest.raises(IAUnetError, match="batch"):
        parse_batch(text)


def test_profiles_for_images_and_clips():
    assert profile_shapes(CARD, (1, 8, 32)) == {"min": [1, 3, 256, 128], "opt": [8, 3, 256, 128],
                                                "max": [32, 3, 256, 128]}
    assert profile_shapes(VIDEO, (1, 2, 4))["max"] == [4, 4, 3, 256, 128]


def test_cache_key_changes_with_what_decides_the_engine():
    base = plan_build(CARD, "cd" * 32, True, ORIN, BuildOptions(ptx_dir=PTX))
    same = plan_build(CARD, "cd" * 32, True, ORIN, BuildOptions(timing_cache="/tmp/t.cache", ptx_dir=PTX))
    assert base.cache_key() == same.cache_key()  # where the timing cache lives does not change the engine
    others = [plan_build(CARD, "ef" * 32, True, ORIN, BuildOptions(ptx_dir=PTX)),
              plan_build(CARD, "cd" * 32, True, Machine("Orin", 87, "10.3.1"), BuildOptions(ptx_dir=PTX)),
              plan_build(CARD, "cd" * 32, True, Machine("H100", 90, "10.3.0"), BuildOptions(ptx_dir=PTX)),
              plan_build(CARD, "cd" * 32, True, ORIN, BuildOptions(batch=(1, 4, 8), ptx_dir=PTX)),
              plan_build(CARD, "cd" * 32, True, ORIN, BuildOptions(opt_level=5, ptx_dir=PTX)),
              plan_build(CARD, "cd" * 32, True, ORIN, BuildOptions(dla_core=0, batch=(8, 8, 8), ptx_dir=PTX))]
    keys = {p.cache_key() for p in others} | {base.cache_key("11" * 32)}
    assert base.cache_key() not in keys and len(keys) == len(others) + 1


def test_sidecar_holds_what_the_runtime_reads():
    plan = plan_build(CARD, "cd" * 32, True, ORIN, BuildOptions(batch=(1, 4, 16), ptx_dir=PTX))
    card = plan.sidecar()
    assert set(FIELDS) <= set(card) and json.loads(json.dumps(card)) == card
    assert card["plugin_route"] == "python" and card["plugins"] == ["iaunet::IAUChannelAffinity", "iaunet::IAUPartAffinity"]
    assert card["profile"]["max"] == [16, 3, 256, 128] and card["compute_capability"] == 87
    assert card["metadata"] == CARD.props and card["onnx_sha256"] == "cd" * 32
    from iaunet.runtime.engine_card import machine_refusal, model_refusal
    assert model_refusal(card, "ab" * 32) is None and machine_refusal(card, ORIN) is None


def test_legacy_int8_needs_a_cache_and_a_version_that_has_it():
    with pytest.raises(IAUnetError, match="--calib"):
        plan_build(CARD, "cd" * 32, True, ORIN, BuildOptions(legacy_int8=True, ptx_dir=PTX))
    with pytest.raises(IAUnetError, match="removed in 11.0"):
        plan_build(CARD, "cd" * 32, True, Machine("H100", 90, "11.4.0"), BuildOptions(legacy_int8=True, calib="x", ptx_dir=PTX))


def test_versions_parse():
    assert version_tuple("10.3.0.26") == (10, 3) and version_tuple("11.4") == (11, 4)
    with pytest.raises(IAUnetError):
        version_tuple("ten")


def test_polygraphy_loader_chain_accepts_our_keywords(tmp_path):
    """Every keyword the builder passes exists in the installed Polygraphy."""
    pytest.importorskip("polygraphy", reason="polygraphy is not installed (the 'trt' extra)")
    from iaunet.engines.builder import loaders
    for options in (BuildOptions(ptx_dir=PTX), BuildOptions(workspace_mb=512, timing_cache=str(tmp_path / "t.cache"),
                                                           dla_core=0, opt_level=3, batch=(4, 4, 4), ptx_dir=PTX),
                    BuildOptions(legacy_int8=True, calib="x.calib", ptx_dir=PTX)):
        plan = plan_build(CARD, "cd" * 32, True, ORIN, options)
        chain = loaders(b"onnx bytes", plan, {"workspace pool": 512 << 20} if options.workspace_mb else None)
        assert callable(chain) and type(chain).__name__ == "EngineBytesFromNetwork"


def test_triage_runner_marks_every_layer_on_the_builders_chain(image_onnx):
    """``iaunet triage --backend tensorrt``'s runner: Polygraphy's TrtRunner over the
    builder's chain with ModifyNetworkOutputs(MARK_ALL) between network and config."""
    pytest.importorskip("polygraphy", reason="polygraphy is not installed (the 'calib' extra)")
    from iaunet.engines.builder import loaders
    from iaunet.engines.triage import layer_runner
    plan = plan_build(CARD, "cd" * 32, True, ORIN, BuildOptions(batch=(4, 4, 4), ptx_dir=PTX))
    runner = layer_runner(image_onnx.read_bytes(), plan, "candidate")  # 10.3: its functions stripped first
    assert type(runner).__name__ == "TrtRunner" and runner.name == "candidate"
    network = loaders(b"onnx bytes", plan, mark_all=True)._network
    assert type(network).__name__ == "ModifyNetworkOutputs"
    assert type(loaders(b"onnx bytes", plan)._network).__name__ == "NetworkFromOnnxBytes"


def test_a_plugin_graph_without_ptx_is_refused_before_tensorrt(image_onnx, tmp_path):
    """Without --ptx the AOT route used to reach PtxManifest(None), a TypeError traceback."""
    from iaunet.engines.builder import build_engine
    with pytest.raises(IAUnetError, match="--ptx DIR"):
        build_engine(image_onnx, tmp_path / "m.engine", BuildOptions())
    assert not list(tmp_path.iterdir())
    plan_build(CARD, "cd" * 32, False, ORIN, BuildOptions())  # a native graph needs none


def test_the_cache_key_covers_the_ptx_contents(tmp_path):
    """Recompiled kernels (same folder, other bytes) must not hit the old engine."""
    from iaunet.engines.builder import cache_key
    (tmp_path / "ptx").mkdir()
    (tmp_path / "ptx" / "manifest.json").write_text("{}")
    kernel = tmp_path / "ptx" / "k.sm87.ptx"
    kernel.write_text("// first compile")
    plan = plan_build(CARD, "cd" * 32, True, ORIN, BuildOptions(ptx_dir=str(tmp_path / "ptx")))
    before = cache_key(plan)
    assert cache_key(plan) == before
    kernel.write_text("// recompiled")
    assert cache_key(plan) != before


def test_legacy_int8_takes_the_fp32_graph_and_enables_fp16_beside_int8():
    """Polygraphy attaches no calibrator to a network with Q/DQ layers: the int8 variant
    with --legacy-int8 would be built from its Q/DQ alone while the sidecar says otherwise."""
    from dataclasses import replace
    with pytest.raises(IAUnetError, match="without --legacy-int8"):
        plan_build(replace(CARD, precision="int8"), "cd" * 32, True, ORIN,
                   BuildOptions(legacy_int8=True, calib="x.calib", ptx_dir=PTX))
    pytest.importorskip("polygraphy", reason="polygraphy is not installed (the 'trt' extra)")
    from iaunet.engines.builder import loaders
    plan = plan_build(CARD, "cd" * 32, True, ORIN, BuildOptions(legacy_int8=True, calib="x.calib", ptx_dir=PTX))
    config = loaders(b"onnx bytes", plan)._config
    assert config.int8 and config.fp16  # weakly typed: FP16 where the calibrator does not reach
    assert "fp16 elsewhere" in plan.sidecar()["precision"]
    strongly = loaders(b"onnx bytes", plan_build(CARD, "cd" * 32, True, ORIN, BuildOptions(ptx_dir=PTX)))._config
    assert not strongly.fp16 and not strongly.int8  # strongly typed: the graph's own types


@pytest.mark.parametrize("batch", [(1, 8, 32), (1, 1, 8)])
def test_dla_needs_a_fixed_batch(batch):
    with pytest.raises(IAUnetError, match="fixed batch"):
        plan_build(CARD, "cd" * 32, True, ORIN, BuildOptions(dla_core=0, batch=batch, ptx_dir=PTX))
    with pytest.raises(IAUnetError, match="core >= 0"):
        plan_build(CARD, "cd" * 32, True, ORIN, BuildOptions(dla_core=-1, batch=(8, 8, 8), ptx_dir=PTX))
    assert plan_build(CARD, "cd" * 32, True, ORIN, BuildOptions(dla_core=1, batch=(8, 8, 8), ptx_dir=PTX)
                      ).sidecar()["build_flags"]["dla_core"] == 1


def test_a_bundles_ptx_folder_serves_the_gpu_it_runs_on(tmp_path):
    """x86 bundles carry ptx/smXX for several architectures; --ptx ptx picks this GPU's."""
    from iaunet.engines.builder import ptx_for_gpu
    for arch in (80, 90):
        (tmp_path / f"sm{arch}").mkdir()
        (tmp_path / f"sm{arch}" / "manifest.json").write_text("{}")
    assert ptx_for_gpu(tmp_path, 90) == str(tmp_path / "sm90")
    assert ptx_for_gpu(tmp_path / "sm80", 80) == str(tmp_path / "sm80")
    with pytest.raises(IAUnetError, match="no PTX for this GPU .sm_87.: it has sm80, sm90"):
        ptx_for_gpu(tmp_path, 87)


def test_the_dla_core_the_engine_was_built_for_is_the_one_it_loads_onto():
    from iaunet.runtime.trt_runner import dla_core
    plan = plan_build(CARD, "cd" * 32, True, ORIN, BuildOptions(dla_core=1, batch=(8, 8, 8), ptx_dir=PTX))
    assert dla_core(plan.sidecar()) == 1
    assert dla_core(plan_build(CARD, "cd" * 32, True, ORIN, BuildOptions(ptx_dir=PTX)).sidecar()) is None


def test_build_of_an_int8_variant_plans_its_tensorrt_layout(int8_variant, tmp_path):
    """iaunet build X.int8.onnx builds X.int8.trt.onnx beside it (FP16 outside the Q/DQ, marked
    for TensorRT), decided before TensorRT is imported; other files are built as given."""
    import shutil
    import onnx
    from iaunet.engines.builder import tensorrt_source
    _, out = int8_variant
    for name in ("m.int8.onnx", "m.int8.trt.onnx"):
        shutil.copy(out / name, tmp_path / name)
    chosen = tensorrt_source(tmp_path / "m.int8.onnx")
    assert chosen == tmp_path / "m.int8.trt.onnx"
    assert {p.key: p.value for p in onnx.load(str(chosen), load_external_data=False).metadata_props}[
        "iaunet.consumer"] == "tensorrt"
    assert tensorrt_source(chosen) == chosen
    (tmp_path / "alone").mkdir()
    shutil.copy(out / "m.int8.onnx", tmp_path / "alone" / "m.int8.onnx")
    assert tensorrt_source(tmp_path / "alone" / "m.int8.onnx") == tmp_path / "alone" / "m.int8.onnx"


def test_the_build_command_names_the_tensorrt_layout_before_tensorrt(int8_variant, tmp_path):
    """The CLI as a user runs it, on a machine without TensorRT: it says it builds
    m.int8.trt.onnx, then stops with the one line 'TensorRT is not installed'."""
    import importlib.util
    import subprocess
    import sys
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here: the build would run")
    _, out = int8_variant
    (tmp_path / "ptx").mkdir()  # a plugin graph's build names its PTX folder
    r = subprocess.run([sys.executable, "-m", "iaunet.cli", "-v", "build", str(out / "m.int8.onnx"), "-o",
                        str(tmp_path / "m.engine"), "--ptx", str(tmp_path / "ptx")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 1 and "TensorRT is not installed" in r.stderr.strip().splitlines()[-1], r.stderr[-800:]
    assert "building m.int8.trt.onnx" in r.stderr, r.stderr[-800:]
    assert [p.name for p in tmp_path.iterdir()] == ["ptx"]
