"""``iaunet doctor``: the pure rules (TensorRT route, PTX ISA a driver accepts, per-stage
install commands), the libcuda calls against a stand-in that answers through the ctypes
pointers as the driver does (and against cuda.h's prototypes), and the real command: with
the optional packages blocked, in this environment, with a fake TensorRT, and ``--json``."""
import ctypes
import importlib.metadata
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from iaunet import doctor

BLOCKED = ("torch", "onnx", "onnxruntime", "triton", "tensorrt", "pycuda", "polygraphy")
ONLY_NUMPY = BLOCKED + ("scipy", "matplotlib", "onnxconverter_common", "PIL")
BLOCKER = """
import importlib.abc, sys
BLOCK = {blocked!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in BLOCK:
            raise ModuleNotFoundError(f'No module named {{name!r}}', name=name)
sys.meta_path.insert(0, Block())
from iaunet.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run_doctor(*args, blocked=(), env=None, cwd=None):
    code = BLOCKER.format(blocked=tuple(blocked))
    return subprocess.run([sys.executable, "-c", code, "doctor", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env, cwd=cwd)


def rows(stdout: str) -> dict:
    """label -> text of the report's rows (stage rows keep their label without the indent)."""
    found = {}
    for line in stdout.splitlines():
        match = re.match(r"^ {0,2}(\S+(?: \d+)?)(?:\s{2,}(.*))?$", line)
        if match:
            found[match.group(1)] = match.group(2) or ""
    return found


# ---------------------------------------------------------------- pure rules

@pytest.mark.parametrize("version, plugin_module, route", [
    ((10, 3), False, doctor.IPLUGINV3), ((10, 8), True, doctor.IPLUGINV3), ((10, 9), True, doctor.AOT),
    ((10, 9), False, doctor.IPLUGINV3), ((11, 4), True, doctor.AOT), ((8, 6), False, doctor.TOO_OLD),
    ((10, 2), True, doctor.TOO_OLD)])
def test_tensorrt_route(version, plugin_module, route):
    assert doctor.tensorrt_route(version, plugin_module) == route


@pytest.mark.parametrize("driver, isa", [(12060, 85), (12050, 85), (12070, 86), (12080, 87), (12090, 88),
                                         (13000, 90), (13010, 90), (12040, None), (11080, None)])
def test_highest_ptx_isa_a_driver_accepts(driver, isa):
    assert doctor.ptx_isa_for_driver(driver) == isa


def test_version_parsing():
    assert doctor.cuda_version_text(12060) == "12.6" and doctor.cuda_version_text(13000) == "13.0"
    assert doctor.version_tuple("10.3.0.26") == (10, 3) and doctor.version_tuple("2.13.0+cpu") == (2, 13)
    assert doctor.version_tuple("11") == (11, 0)
    assert doctor.jetson_release("# R36 (release), REVISION: 4.0, GCID: 1, BOARD: generic, EABI: aarch64") == "R36.4.0"
    assert doctor.jetson_release("") is None


# ---------------------------------------------------------------- libcuda through ctypes

class FakeCuda:
    """The libcuda entry points doctor calls, writing their results through the ctypes
    pointers they are given and refusing arguments of the wrong kind."""

    def __init__(self, version=12060, gpus=(("NVIDIA Orin", 8, 7, 61.4),), init_result=0):
        self.version, self.gpus, self.init_result, self.calls = version, gpus, init_result, []

    def cuDriverGetVersion(self, p):
        self.calls.append("cuDriverGetVersion")
        p._obj.value = self.version
        return 0

    def cuInit(self, flags):
        self.calls.append("cuInit")
        return self.init_result

    def cuDeviceGetCount(self, p):
        p._obj.value = len(self.gpus)
        return 0

    def cuDeviceGet(self, p, ordinal):
        assert isinstance(p._obj, ctypes.c_int) and 0 <= ordinal < len(self.gpus)
        p._obj.value = 100 + ordinal  # a device handle is not the ordinal
        return 0

    def _gpu(self, device):
        assert isinstance(device, ctypes.c_int), "pass the CUdevice from cuDeviceGet"
        return self.gpus[device.value - 100]

    def cuDeviceGetName(self, buffer, length, device):
        assert length == len(buffer)
        buffer.value = self._gpu(device)[0].encode()[:length - 1]
        return 0

    def cuDeviceGetAttribute(self, p, attribute, device):
        name, major, minor, _ = self._gpu(device)
        p._obj.value = {75: major, 76: minor}[attribute]
        return 0

    def cuDeviceTotalMem_v2(self, p, device):
        assert isinstance(p._obj, ctypes.c_size_t)
        p._obj.value = int(self._gpu(device)[3] * 2**30)
        return 0

    def cuGetErrorName(self, result, p):
        p._obj.value = {100: b"CUDA_ERROR_NO_DEVICE", 35: b"CUDA_ERROR_INSUFFICIENT_DRIVER"}[result]
        return 0


def test_cuda_probe_reads_version_devices_and_memory():
    cuda = doctor.probe_cuda(FakeCuda(gpus=(("NVIDIA Orin", 8, 7, 61.4), ("NVIDIA H100", 9, 0, 79.6))))
    assert (cuda["found"], cuda["cuda"], cuda["ptx_isa"], cuda["error"]) == (True, "12.6", "8.5", None)
    assert cuda["gpus"] == [{"index": 0, "name": "NVIDIA Orin", "sm": 87, "memory_gib": 61.4},
                            {"index": 1, "name": "NVIDIA H100", "sm": 90, "memory_gib": 79.6}]


def test_cuda_probe_reports_the_version_before_a_failing_cuinit():
    fake = FakeCuda(version=11080, init_result=100)
    cuda = doctor.probe_cuda(fake)
    assert fake.calls == ["cuDriverGetVersion", "cuInit"]
    assert (cuda["cuda"], cuda["ptx_isa"], cuda["gpus"]) == ("11.8", None, [])
    assert cuda["error"] == "cuInit failed with CUDA_ERROR_NO_DEVICE"


def test_cuda_probe_without_libcuda(monkeypatch):
    monkeypatch.setattr(doctor, "load_libcuda", lambda: None)
    cuda = doctor.probe_cuda()
    assert (cuda["found"], cuda["error"], cuda["gpus"]) == (False, "no CUDA driver (libcuda not found)", [])


PROTOTYPES = {"cuDriverGetVersion": "int *driverVersion", "cuInit": "unsigned int Flags",
              "cuDeviceGetCount": "int *count", "cuDeviceGet": "CUdevice *device, int ordinal",
              "cuDeviceGetName": "char *name, int len, CUdevice dev",
              "cuDeviceGetAttribute": "int *pi, CUdevice_attribute attrib, CUdevice dev",
              "cuDeviceTotalMem": "size_t *bytes, CUdevice dev"}


def test_libcuda_calls_match_cuda_h():
    """Every entry point doctor calls is declared in cuda.h with the arguments FakeCuda
    takes, and is exported under the name called (cuDeviceTotalMem is #defined to _v2)."""
    pytest.importorskip("triton", reason="triton is not installed (it bundles cuda.h)")
    import triton
    header = Path(triton.__file__).parent / "backends" / "nvidia" / "include" / "cuda.h"
    if not header.is_file():
        pytest.skip(f"this Triton bundles no cuda.h at {header}")
    cuda_h = header.read_text(errors="replace")
    called = set(re.findall(r"\blib\.(cu[A-Za-z_0-9]+)\(", Path(doctor.__file__).read_text()))
    assert {name.removesuffix("_v2") for name in called} == set(PROTOTYPES)
    for name in called:
        base = name.removesuffix("_v2")
        assert f"CUresult CUDAAPI {base}({PROTOTYPES[base]});" in cuda_h, base
        remap = re.search(rf"^\s*#define\s+{base}\s+(\S+)", cuda_h, re.M)
        exported = remap.group(1) if remap and not remap.group(1).startswith("__CUDA_API_PTSZ") else base
        assert exported == name, f"doctor calls {name} but cuda.h exports {base} as {exported}"


# ---------------------------------------------------------------- stages

def trt_facts(version=None, loads=True, plugin=False, error=None):
    if version is None:
        return {"installed": False, "version": None, "loads": False, "error": None, "plugin_module": False,
                "route": None}
    return {"installed": True, "version": version, "loads": loads, "error": error, "plugin_module": plugin,
            "route": doctor.tensorrt_route(doctor.version_tuple(version), plugin)}


def make_facts(cuda, trt=None, jetson=None, missing=("pycuda",)):
    facts = {"iaunet": {"version": "0.1.0", "source": "/src"}, "python": {"version": "3.10.12", "executable": "py"},
             "platform": {"system": "Linux", "machine": "aarch64", "jetson": jetson, "model": None}}
    for name in doctor.PACKAGES:
        facts[name] = {"installed": name not in missing, "version": None if name in missing else "1.0"}
    facts["onnxruntime"]["providers"] = ["CPUExecutionProvider"]
    facts["triton"]["ptxas"] = True
    facts["tensorrt"], facts["cuda_driver"] = trt or trt_facts(), cuda
    facts["dla"] = {"cores": None, "note": "unknown without TensorRT"}
    facts["stages"] = {name: doctor.stage_report(name, facts, "/src") for name in doctor.STAGES}
    return facts


def test_stages_on_a_jetson_with_tensorrt_10_3():
    facts = make_facts(doctor.probe_cuda(FakeCuda()), trt_facts("10.3.0"), jetson="R36.4.0")
    stages = facts["stages"]
    assert stages["engines"] == {"ready": True, "missing": [], "install": None, "note": None}
    assert stages["runtime_trt"]["missing"] == ["pycuda"]
    assert stages["runtime_trt"]["install"] == "pip install -e '.[trt]'"
    assert all(stages[s]["ready"] for s in ("train", "export", "calib", "kernels", "runtime_ort"))
    text = doctor.render(facts)
    assert "NVIDIA Orin (sm_87), 61.4 GiB" in text and "CUDA 12.6, PTX ISA up to 8.5, 1 GPU(s)" in text
    assert "10.3.0: Python IPluginV3" in rows(text)["tensorrt"]


def test_tensorrt_install_command_follows_the_platform_and_driver():
    no_trt = make_facts(doctor.probe_cuda(FakeCuda(version=12080)))
    assert no_trt["stages"]["engines"]["missing"] == ["tensorrt"]
    assert no_trt["stages"]["runtime_trt"]["install"] == "pip install tensorrt-cu12 -e '.[trt]'"
    jetson = make_facts(doctor.probe_cuda(FakeCuda()), jetson="R36.4.0", missing=())
    assert jetson["stages"]["runtime_trt"]["install"] == "sudo apt-get install nvidia-tensorrt"
    assert "--system-site-packages" in jetson["stages"]["runtime_trt"]["note"]
    broken = make_facts(doctor.probe_cuda(FakeCuda(version=13000)), trt_facts("11.4.0", loads=False, error="x"))
    assert broken["stages"]["engines"]["missing"] == ["tensorrt (cannot load)"]
    assert broken["stages"]["engines"]["install"] == "pip install --force-reinstall tensorrt-cu13==11.4.0"
    old = make_facts(doctor.probe_cuda(FakeCuda()), trt_facts("8.6.1"), missing=())
    assert old["stages"]["engines"]["missing"] == ["tensorrt >= 10.3"]
    assert old["stages"]["engines"]["install"] == "pip install 'tensorrt-cu12>=10.9'"


def test_gpus_the_kernels_cannot_serve_are_named():
    old_driver = make_facts(doctor.probe_cuda(FakeCuda(version=12040)), trt_facts("10.3.0"))
    assert "sm_87 kernels need PTX 8.5" in old_driver["stages"]["engines"]["note"]
    assert "update the driver" in old_driver["stages"]["engines"]["note"]
    turing = make_facts(doctor.probe_cuda(FakeCuda(gpus=(("Tesla T4", 7, 5, 15.6),))), trt_facts("10.9.0", plugin=True))
    assert "sm_75 has no IAU kernels" in turing["stages"]["engines"]["note"]
    no_gpu = make_facts(doctor.probe_cuda(FakeCuda(init_result=100)), trt_facts("10.9.0", plugin=True))
    assert no_gpu["stages"]["engines"]["missing"] == ["a CUDA GPU"]


def test_install_commands_for_missing_python_packages():
    facts = make_facts(doctor.probe_cuda(FakeCuda()), missing=("torch", "scipy", "onnx", "triton"))
    stages = facts["stages"]
    assert stages["train"]["install"] == "pip install torch==2.13.0 -e '.[train]'"
    assert stages["export"]["install"] == "pip install torch==2.13.0 -e '.[export]'"
    assert stages["calib"]["install"] == "pip install -e '.[calib]'"
    assert stages["kernels"]["install"] == "pip install -e '.[kernels]'"
    elsewhere = doctor.stage_report("train", facts, "/somewhere/else")
    assert elsewhere["install"] == "pip install torch==2.13.0 -e '/src[train]'"
    facts["triton"].update(installed=True, ptxas=False)
    assert doctor.stage_report("kernels", facts, "/src")["missing"] == ["Triton's ptxas"]


# ---------------------------------------------------------------- the command

def test_imports_nothing_heavy():
    code = ("import sys, iaunet.doctor, iaunet.cli.doctor; "
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({ONLY_NUMPY!r})))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr


@pytest.mark.parametrize("blocked", [BLOCKED, ONLY_NUMPY], ids=["optional-blocked", "only-numpy"])
def test_without_the_optional_packages(blocked):
    result = run_doctor(blocked=blocked, cwd=Path(doctor.__file__).resolve().parent.parent)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    found = rows(result.stdout)
    for name in BLOCKED:
        assert found[name] == "not installed", (name, result.stdout)
    assert found["train"].startswith("missing torch") and "pip install torch==2.13.0" in found["train"]
    assert found["tensorrt"] == "not installed" and found["dla"] == "unknown without TensorRT"
    assert "pip install" in found["engines"] and "tensorrt" in found["engines"]
    assert len(result.stdout.splitlines()) < 40


def _libcuda_loads() -> bool:
    return doctor.load_libcuda() is not None


def test_reports_this_environment():
    ort = pytest.importorskip("onnxruntime")
    result = run_doctor()
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    found = rows(result.stdout)
    assert found["onnxruntime"].startswith(importlib.metadata.version("onnxruntime"))
    for provider in ort.get_available_providers():
        assert provider in found["onnxruntime"]
    assert found["numpy"] == importlib.metadata.version("numpy")
    assert found["python"].startswith(".".join(map(str, sys.version_info[:3])))
    if _libcuda_loads():
        assert found["cuda_driver"].startswith("CUDA ")
    else:
        assert found["cuda_driver"] == "no CUDA driver (libcuda not found)"


def test_json_has_the_facts_the_text_shows(tmp_path):
    result = run_doctor("--json", tmp_path / "doctor.json")
    assert result.returncode == 0, result.stderr
    facts = json.loads((tmp_path / "doctor.json").read_text())
    found = rows(result.stdout)
    assert set(facts) - {"stages"} <= set(found) and set(facts["stages"]) <= set(found)
    assert list(found).index("stages") < list(found).index("train")
    for name in doctor.PACKAGES:
        assert facts[name]["installed"] == (found[name] != "not installed")
        if facts[name]["version"]:
            assert found[name].startswith(facts[name]["version"])
    for name, stage in facts["stages"].items():
        assert found[name].startswith("ready" if stage["ready"] else "missing")
        assert stage["install"] is None or stage["install"] in found[name]
    assert [p.name for p in tmp_path.iterdir()] == ["doctor.json"]


def test_json_into_a_missing_folder_is_one_line(tmp_path):
    result = run_doctor("--json", tmp_path / "nope" / "d.json")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"iaunet doctor: error: output folder {tmp_path / 'nope'} does not exist"]


FAKE_TENSORRT = {
    "unloadable": ("raise ImportError('libnvinfer.so.10: cannot open shared object file: No such file or directory')",
                   "10.3.0"),
    "aot": ("__version__ = '10.9.0'\nclass Logger:\n    ERROR = 1\n", "10.9.0"),
}


@pytest.mark.parametrize("kind", sorted(FAKE_TENSORRT))
def test_a_fake_tensorrt(tmp_path, kind):
    """A binding wheel whose libraries do not load, and one (with tensorrt.plugin) that does."""
    source, version = FAKE_TENSORRT[kind]
    (tmp_path / "tensorrt" / "plugin").mkdir(parents=True)
    (tmp_path / "tensorrt" / "__init__.py").write_text(source + "\n")
    (tmp_path / "tensorrt" / "plugin" / "__init__.py").write_text("")
    info = tmp_path / f"tensorrt_cu12_bindings-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: tensorrt_cu12_bindings\nVersion: {version}\n")
    (info / "top_level.txt").write_text("tensorrt\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = run_doctor(env=env)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    found = rows(result.stdout)
    if kind == "unloadable":
        assert found["tensorrt"] == ("10.3.0 installed but cannot load: ImportError: libnvinfer.so.10: cannot open "
                                     "shared object file: No such file or directory; would take ipluginv3")
        assert found["engines"].startswith("missing tensorrt (cannot load)")
        assert found["dla"] == "unknown without TensorRT"
    else:
        assert found["tensorrt"].startswith("10.9.0: AOT plugins")
        assert not found["engines"].startswith("missing tensorrt")
        assert found["dla"] == ("unknown (no GPU visible)" if not _libcuda_loads() else found["dla"])
