"""Ahead-of-time PTX: every supported architecture, deterministic bytes, the manifest, the cache."""
import json
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="triton is not installed (pip install -e '.[kernels]')")

from iaunet.engines.aot import SUPPORTED_ARCHS, compile_kernels, default_variants  # noqa: E402
from iaunet.core.errors import IAUnetError  # noqa: E402


@pytest.fixture(scope="module")
def orin(orin_ptx):
    manifest, folder, cache = orin_ptx
    return manifest, folder.parent


def test_manifest_describes_every_kernel(orin):
    manifest, root = orin
    assert manifest["arch"] == 87 and manifest["format"] == "iaunet-ptx-v1"
    ops = {(k["op"], k["dtype"]) for k in manifest["kernels"]}
    assert ops == {(op, d) for op in ("IAUChannelAffinity", "IAUPartAffinity") for d in ("fp16", "fp32")}
    assert manifest["ptx_version"] == "8.5" and manifest["min_cuda_driver"] == "12.5"
    for k in manifest["kernels"]:
        ptx = (root / "a" / k["file"]).read_text()
        assert "\n.version 8.5\n" in ptx  # loadable by JetPack 6's CUDA 12.6 driver (Triton alone writes 8.8)
        assert ".target sm_87" in ptx and f".entry {k['entry']}(" in ptx
        # the entry has one parameter per listed launch argument (Triton's unused scratch pointers dropped)
        entry = ptx[ptx.index(f".entry {k['entry']}("):]
        assert entry[:entry.index(")")].count(".param") == len(k["params"])
        assert k["block"][0] % 32 == 0 and k["shared_opt_in"] == (k["shared_bytes"] > 49152)
        assert 16 <= k["registers"] <= 255 and k["spill_bytes"] == 0  # ptxas -v: the defaults do not spill


def test_aligned_variants_use_vector_memory_access(orin):
    """The aligned form exists exactly where H*W allows it and is what makes Triton emit
    128-bit loads and stores; the general form is scalar."""
    manifest, root = orin
    channel = [k for k in manifest["kernels"] if k["op"] == "IAUChannelAffinity"]
    assert {(k["dtype"], k["constexprs"]["BLOCK_L"]) for k in channel if k["aligned"]} == \
        {(d, hw) for d in ("fp16", "fp32") for hw in (128, 512)}
    for k in channel:
        ptx = (root / "a" / k["file"]).read_text()
        vector = ptx.count("ld.global.v4") + ptx.count("st.global.v4")
        assert (vector > 0) == k["aligned"], k["file"]


def test_ptx_version_can_be_raised_but_not_below_the_architecture(tmp_path):
    from iaunet.engines.aot import ptx_version_for
    assert ptx_version_for(87) == 85 and ptx_version_for(100) == 86
    assert ptx_version_for(87, 87) == 87
    with pytest.raises(IAUnetError, match="PTX ISA 8.5 cannot target sm_100"):
        ptx_version_for(100, 85)
    variants = [v for v in default_variants((128,), (4,)) if v.op == "IAUPartAffinity"][:1]
    manifest = compile_kernels(90, tmp_path, variants, cache_dir=tmp_path / "cache", ptx_version=87)
    assert "\n.version 8.7\n" in (tmp_path / manifest["kernels"][0]["file"]).read_text()
    assert manifest["min_cuda_driver"] == "12.8"


def test_a_ptx_version_beyond_the_bundled_ptxas_is_refused():
    from iaunet.engines.aot import PTX_CUDA, _ptxas_cuda_version, _version_tuple, ptx_version_for
    ptxas = _ptxas_cuda_version(90)
    too_new = [v for v in PTX_CUDA if _version_tuple(PTX_CUDA[v]) > ptxas]
    if not too_new:
        pytest.skip(f"this Triton's ptxas (CUDA {ptxas}) writes every PTX ISA listed")
    with pytest.raises(IAUnetError, match="newer than the ptxas of this Triton"):
        ptx_version_for(90, too_new[0])


def test_same_inputs_same_bytes_and_cache_reuse(orin, tmp_path, monkeypatch):
    manifest, root = orin
    again = compile_kernels(87, tmp_path / "b", cache_dir=root / "cache")
    assert again == manifest
    for k in manifest["kernels"]:
        assert (tmp_path / "b" / k["file"]).read_bytes() == (root / "a" / k["file"]).read_bytes()
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "triton-cache"))  # a real compile, not Triton's cache
    fresh = compile_kernels(87, tmp_path / "c", cache_dir=tmp_path / "empty-cache")
    assert [k["sha256"] for k in fresh["kernels"]] == [k["sha256"] for k in manifest["kernels"]]


def test_the_ptx_names_no_folder_of_this_machine(orin):
    # Triton's line information names the kernel sources' and Triton's absolute paths: the
    # same toolkit installed in another folder (or Triton's shared cache filled by another
    # install) gave other bytes, hashes and engine-cache keys
    import triton
    manifest, root = orin
    folders = [str(Path(compile_kernels.__code__.co_filename).parents[1]), str(Path(triton.__file__).parent)]
    for k in manifest["kernels"]:
        ptx = (root / "a" / k["file"]).read_text()
        assert ".file" not in ptx and ".debug_info" not in ptx, k["file"]
        assert not any(folder in ptx for folder in folders), k["file"]


def test_a_corrupt_cache_entry_is_compiled_again(tmp_path):
    from iaunet.engines.aot import part_variant
    variants = [part_variant("fp32", 4)]
    first = compile_kernels(87, tmp_path / "a", variants, cache_dir=tmp_path / "cache")
    (entry,) = (tmp_path / "cache").glob("*.json")
    entry.write_text('{"ptx": "trunc')  # an interrupted or damaged cache file
    again = compile_kernels(87, tmp_path / "b", variants, cache_dir=tmp_path / "cache")
    assert again == first
    assert json.loads(entry.read_text())["ptx"] == (tmp_path / "a" / first["kernels"][0]["file"]).read_text()


@pytest.mark.parametrize("arch", [a for a in SUPPORTED_ARCHS if a != 87])
def test_every_supported_architecture_compiles(arch, tmp_path):
    from iaunet.engines.aot import MIN_PTX_VERSION, PTX_CUDA, _ptxas_cuda_version, _version_tuple
    if _ptxas_cuda_version(arch) < _version_tuple(PTX_CUDA[MIN_PTX_VERSION[arch]]):
        with pytest.raises(IAUnetError, match=f"sm_{arch} needs a newer Triton"):
            compile_kernels(arch, tmp_path, cache_dir=tmp_path / "cache")
        pytest.skip(f"this Triton's ptxas (CUDA {_ptxas_cuda_version(arch)}) cannot write sm_{arch}'s PTX ISA")
    variants = [v for v in default_variants((128,), (4,), arch) if v.dtype == "fp16"]
    manifest = compile_kernels(arch, tmp_path, variants, cache_dir=tmp_path / "cache")
    ptx = (tmp_path / manifest["kernels"][0]["file"]).read_text()
    assert f".target sm_{arch}" in ptx
    assert all(k["spill_bytes"] == 0 for k in manifest["kernels"])


def test_hopper_variants_use_warp_group_tensor_cores(tmp_path):
    """On sm_90 the aligned FP16 channel kernels take wgmma (Hopper's tensor-core path);
    the block sizes that do so still spill nothing."""
    variants = [v for v in default_variants((128, 512), (4,), 90) if v.dtype == "fp16" and v.op == "IAUChannelAffinity"]
    manifest = compile_kernels(90, tmp_path, variants, cache_dir=tmp_path / "cache")
    for k in manifest["kernels"]:
        ptx = (tmp_path / k["file"]).read_text()
        assert ("wgmma.mma_async" in ptx) == k["aligned"], k["file"]
        assert k["spill_bytes"] == 0, k["file"]


def test_unknown_architecture(tmp_path):
    with pytest.raises(IAUnetError, match="compute capability 75"):
        compile_kernels(75, tmp_path)


def test_cli(tmp_path):
    import subprocess
    import sys
    env = dict(__import__("os").environ, TRITON_INTERPRET="1")  # the command must ignore it
    r = subprocess.run([sys.executable, "-m", "iaunet.cli", "plugins", "compile", "--arch", "87", "--arch", "90",
                        "-o", str(tmp_path / "ptx"), "--hw", "512", "--nodes", "4", "--cache-dir", str(tmp_path / "c")],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "ptx" / "sm90" / "manifest.json").read_text())["arch"] == 90
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "ptx"]  # no temporary folder left beside it


def test_library_refuses_to_compile_in_an_interpreting_process(tmp_path, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(IAUnetError, match="interpreter"):
        compile_kernels(87, tmp_path)


def test_runtime_manifest_selects_variants_and_launch_geometry(orin, tmp_path):
    from iaunet.core.plugin_contract import CHANNEL_OP, PART_OP, PtxManifest
    manifest, root = orin
    ptx = PtxManifest(root / "a")
    assert ptx.arch == 87
    big = ptx.select(CHANNEL_OP, "fp16", 512)      # H*W = 32*16
    small = ptx.select(CHANNEL_OP, "fp32", 100)    # an awkward H*W pads to 128
    assert big.constexprs["BLOCK_L"] == 512 and small.constexprs["BLOCK_L"] == 128
    assert big.aligned and not small.aligned and not ptx.select(CHANNEL_OP, "fp16", 512, aligned=False).aligned
    assert big.ptx.startswith(b"//") and big.params[:4] == ("X", "K", "L", "Y")
    assert big.grid(32, 512) == (512 // big.constexprs["BLOCK_M"], 32, 1)
    assert big.grid(1, 513)[0] == 512 // big.constexprs["BLOCK_M"] + 1
    part = ptx.select(PART_OP, "fp32", 16)
    assert part.grid(8, 16) == (16, 8, 1) and part.block == (32, 1, 1)
    with pytest.raises(IAUnetError, match="no IAUChannelAffinity kernel for fp16 with BLOCK_L=1024"):
        ptx.select(CHANNEL_OP, "fp16", 1000)
    with pytest.raises(IAUnetError, match="manifest.json not found"):
        PtxManifest(tmp_path)


def test_dropping_parameters_refuses_used_ones_and_ptxas_checks_the_result(orin):
    from iaunet.engines.aot import assemble_check, drop_trailing_params
    manifest, root = orin
    k = next(k for k in manifest["kernels"] if k["op"] == "IAUPartAffinity")
    ptx = (root / "a" / k["file"]).read_text()
    assert drop_trailing_params(ptx, k["entry"], 4) == ptx      # nothing beyond the four arguments left
    with pytest.raises(IAUnetError, match="reads its trailing parameters"):
        drop_trailing_params(ptx, k["entry"], 3)                # the output pointer is used
    assert assemble_check(ptx, 87)["registers"] > 0
    with pytest.raises(IAUnetError, match="ptxas rejected"):
        assemble_check(ptx.replace("ld.param.b32", "ld.param.bogus", 1), 87)
