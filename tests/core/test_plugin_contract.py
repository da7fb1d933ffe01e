"""The plugins' run-time side without a GPU: kernel choice, launch plans, the argument
block handed to cuLaunchKernel (checked against the parameters the PTX declares), kernel
serialisation, and the refusals."""
import ctypes
import ctypes.util
import json
import shutil

import pytest

from iaunet.core.errors import IAUnetError
from iaunet.core.plugin_contract import (CHANNEL_OP, PART_OP, Kernel, PtxManifest, choose_kernels, for_pointers,
                             kernels_from_bytes,
                             kernels_to_bytes, plan_launch, ptx_parameter_widths)


@pytest.fixture(scope="module")
def manifest(orin_ptx):
    return PtxManifest(orin_ptx[1])


def _read_back(params, widths):
    kinds = {64: ctypes.c_uint64, 32: ctypes.c_int32}
    return [ctypes.cast(params[i], ctypes.POINTER(kinds[w])).contents.value for i, w in enumerate(widths)]


def test_channel_arguments_match_the_ptx_entry(manifest):
    kernel = manifest.select(CHANNEL_OP, "fp16", 512)
    launch = plan_launch(kernel, (32, 512, 512), {}, src=0x7F0000000100, dst=0x7F0000400100)
    widths = ptx_parameter_widths(kernel.ptx.decode(), kernel.entry)
    assert widths == [64, 32, 32, 64]   # X, K, L, Y: Triton's unused scratch pointers are gone
    params, keep = launch.packed()
    assert len(params) == len(widths)
    assert _read_back(params, widths) == [0x7F0000000100, 512, 512, 0x7F0000400100]
    assert launch.grid == (512 // kernel.constexprs["BLOCK_M"], 32, 1)


def test_part_arguments_carry_the_part_count(manifest):
    kernel = manifest.select(PART_OP, "fp32", 16)
    launch = plan_launch(kernel, (8, 16, 16), {"frames": 4, "parts": 4}, src=0x1000, dst=0x2000)
    widths = ptx_parameter_widths(kernel.ptx.decode(), kernel.entry)
    params, _ = launch.packed()
    assert _read_back(params, widths) == [0x1000, 16, 4, 0x2000]
    assert launch.grid == (16, 8, 1)


def test_launch_refuses_bad_shapes_and_misaligned_tensors(manifest):
    part = manifest.select(PART_OP, "fp32", 16)
    with pytest.raises(IAUnetError, match=r"frames=4, parts=4 takes \[B, 16, 16\]"):
        plan_launch(part, (8, 12, 12), {"frames": 4, "parts": 4}, 0x1000, 0x2000)
    aligned = manifest.select(CHANNEL_OP, "fp16", 128)
    assert aligned.aligned
    with pytest.raises(IAUnetError, match="16-byte aligned"):
        plan_launch(aligned, (1, 256, 128), {}, 0x1008, 0x2000)
    with pytest.raises(IAUnetError, match="rank-3"):
        plan_launch(aligned, (1, 256, 8, 16), {}, 0x1000, 0x2000)


def test_kernel_round_trips_through_bytes_and_rejects_garbage(manifest):
    kernel = manifest.select(CHANNEL_OP, "fp32", 512)
    again = Kernel.from_bytes(kernel.to_bytes())
    assert again == kernel and again.arch == 87 and again.ptx == kernel.ptx
    for bad in (b"", b"{}", b"\xff\xfe", json.dumps({"format": "other"}).encode(), kernel.to_bytes()[:-20]):
        with pytest.raises(IAUnetError, match="iaunet-kernel-v1"):
            Kernel.from_bytes(bad)


def test_an_engine_carries_several_kernels_and_picks_per_input(manifest):
    """What the IPluginV3 plugin serialises when TensorRT never configured it: every variant."""
    carried = kernels_from_bytes(kernels_to_bytes(manifest.variants(CHANNEL_OP)))
    assert carried == manifest.variants(CHANNEL_OP) and len(carried) == 8
    assert choose_kernels(carried, CHANNEL_OP, "fp16", 512) == [manifest.select(CHANNEL_OP, "fp16", 512),
                                                                manifest.select(CHANNEL_OP, "fp16", 512, aligned=False)]
    (general,) = choose_kernels(carried, CHANNEL_OP, "fp32", 100)
    assert not general.aligned and general.constexprs["BLOCK_L"] == 128
    with pytest.raises(IAUnetError, match=r"carries kernels for"):
        choose_kernels(carried, CHANNEL_OP, "fp16", 1024)
    with pytest.raises(IAUnetError, match=r"carries kernels for"):
        choose_kernels(carried, PART_OP, "fp16", 4)


def test_misaligned_tensors_fall_back_to_the_general_kernel(manifest):
    """TensorRT may hand a plugin a tensor inside a larger buffer: the aligned variant runs
    only on 16-byte aligned input and output, the general one otherwise."""
    choices = choose_kernels(manifest.variants(CHANNEL_OP), CHANNEL_OP, "fp16", 512)
    aligned, general = choices
    assert aligned.aligned and not general.aligned
    assert for_pointers(choices, 0x7f0000000000, 0x7f0000100000) == aligned
    assert for_pointers(choices, 0x7f0000000008, 0x7f0000100000) == general
    assert for_pointers(choices, 0x7f0000000000, 0x7f0000100002) == general
    only_aligned = choices[:1]  # an engine that carries no general variant: the launch plan says why
    kernel = for_pointers(only_aligned, 0x7f0000000008, 0x7f0000100000)
    with pytest.raises(IAUnetError, match="16-byte aligned"):
        plan_launch(kernel, (1, 64, 512), {}, 0x7f0000000008, 0x7f0000100000)


def test_kernel_covers_only_the_sizes_it_was_built_for(manifest):
    kernel = manifest.select(CHANNEL_OP, "fp16", 128)
    assert kernel.covers(128) and kernel.covers(64) and not kernel.covers(144) and not kernel.covers(100)
    general = manifest.select(CHANNEL_OP, "fp16", 100)
    assert general.covers(100) and not general.covers(129)


def test_manifest_refuses_a_changed_or_missing_ptx(orin_ptx, tmp_path):
    folder = tmp_path / "ptx"
    shutil.copytree(orin_ptx[1], folder)
    entry = next(e for e in json.loads((folder / "manifest.json").read_text())["kernels"]
                 if e["op"] == PART_OP and e["dtype"] == "fp16")
    (folder / entry["file"]).write_text((folder / entry["file"]).read_text().replace("sm_87", "sm_86"))
    with pytest.raises(IAUnetError, match="checksum"):
        PtxManifest(folder).select(PART_OP, "fp16", 4)
    (folder / entry["file"]).unlink()
    with pytest.raises(IAUnetError, match="missing"):
        PtxManifest(folder).select(PART_OP, "fp16", 4)
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(IAUnetError, match="not valid JSON"):
        PtxManifest(folder)


@pytest.mark.skipif(ctypes.util.find_library("cuda") is not None, reason="this machine has a CUDA driver")
def test_driver_calls_without_a_driver_say_so():
    from iaunet.core import cuda_driver
    with pytest.raises(IAUnetError, match=r"CUDA driver \(libcuda.so.1\) was not found"):
        cuda_driver.current_context()
