"""The project's TensorRT names exist in the real binding wheels of every supported
version its modules claim (10.3: JetPack 6; 11.4: datacenter).

The wheels (about 1 MB each, no dependencies) are fetched with pip once and cached in
$IAUNET_TRT_WHEELS or ~/.cache/iaunet/trt-wheels. A module that uses TensorRT declares
``TRT_MIN_VERSION``: its guard, checked at run time before any of its names are used (or
gets tensorrt from ``import_tensorrt``, which checks the core's).
"""
import ast
import os
import re
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
WHEELS = {(10, 3): "tensorrt-cu12-bindings==10.3.0", (11, 4): "tensorrt-cu13-bindings==11.4.0.106"}
# modules that import tensorrt, or take the imported module as a ``trt`` parameter
TRT_MODULES = sorted(p for pkg in ("engines", "runtime", "calib", "export", "iaunet") for p in (ROOT / pkg).rglob("*.py")
                     if re.search(r"^\s*import tensorrt|^def \w+\(trt\b", p.read_text(), re.M))


# runtime.trt_runner.import_tensorrt refuses versions below the core's TRT_MIN_VERSION
GUARDED_IMPORT = "import_tensorrt"


def _cache() -> Path:
    return Path(os.environ.get("IAUNET_TRT_WHEELS", Path.home() / ".cache" / "iaunet" / "trt-wheels"))


def _wheel(requirement: str) -> Path:
    name, version = requirement.split("==")
    pattern = f"{name.replace('-', '_')}-{version}-*.whl"
    found = sorted(_cache().glob(pattern))
    if not found:
        _cache().mkdir(parents=True, exist_ok=True)
        r = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", requirement, "-d", str(_cache())],
                           capture_output=True, text=True, timeout=300)
        found = sorted(_cache().glob(pattern))
        if not found:
            pytest.skip(f"could not download {requirement}: {r.stderr.strip()[-200:]}")
    return found[0]


class _Strings(set):
    """Identifiers in a shared library. The linker merges a string into the tail of a longer
    one ("register_creator" lives inside "deregister_creator"), so a name also counts as
    present when some identifier ends with it."""

    def __contains__(self, name):
        return set.__contains__(self, name) or any(s.endswith(name) for s in self)


def _names_in_wheel(path: Path) -> dict:
    """{'trt': identifiers of tensorrt.so and its package's Python, 'trtp': names defined in
    tensorrt/plugin (if any), 'required': methods a Python plugin must implement}."""
    with zipfile.ZipFile(path) as wheel:
        so = next(n for n in wheel.namelist() if re.search(r"tensorrt[^/]*/tensorrt[^/]*\.so$", n))
        binary = wheel.read(so)
        init = next(wheel.read(n).decode() for n in wheel.namelist() if re.search(r"^tensorrt[^/]*/__init__\.py$", n))
        plugin_files = [wheel.read(n).decode() for n in wheel.namelist() if "/plugin/" in n and n.endswith(".py")]
    plugin_src = "\n".join(plugin_files)
    strings = {s.decode() for s in re.findall(rb"[A-Za-z_][A-Za-z0-9_]{1,80}", binary)}
    strings |= set(re.findall(r"^def\s+(\w+)", init, re.M))
    plugin = set(re.findall(r"^\s*(?:def|class)\s+(\w+)", plugin_src, re.M))
    required = {m.decode() for m in re.findall(rb"no implementation provided for (\w+)\(\)", binary)}
    return {"trt": _Strings(strings), "trtp": plugin, "has_plugin": bool(plugin_src), "required": required,
            "trtp_members": _member_kinds(plugin_files)}


def _member_kinds(sources) -> dict:
    """{member name: {'property', 'method'}} over the concrete classes' members in
    tensorrt.plugin's Python sources (abstract declarations left out)."""
    kinds = {}
    for source in sources:
        with warnings.catch_warnings():  # their docstrings hold invalid escapes such as '\s'
            warnings.simplefilter("ignore", SyntaxWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            tree = ast.parse(source)
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            for f in (n for n in cls.body if isinstance(n, ast.FunctionDef)):
                decorators = {d.id if isinstance(d, ast.Name) else getattr(d, "attr", None) for d in f.decorator_list}
                if not decorators & {"setter", "abstractmethod"}:
                    kinds.setdefault(f.name, set()).add("property" if "property" in decorators else "method")
    return kinds


def _member_misuse(path: Path, kinds: dict, own_methods: set) -> list:
    """Calls of what tensorrt.plugin defines only as a property (``expr.is_constant()``), and
    tests of what it defines only as a method without calling it (``if expr.constant_value:``);
    names the project defines as its own methods are left out."""
    tree = ast.parse(path.read_text())
    found = []
    tests = [n.test for n in ast.walk(tree) if isinstance(n, (ast.If, ast.IfExp, ast.While, ast.Assert))]
    tests += [n.operand for n in ast.walk(tree) if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.Not)]
    tests += [v for n in ast.walk(tree) if isinstance(n, ast.BoolOp) for v in n.values]
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name = node.func.attr
            if kinds.get(name) == {"property"} and name not in own_methods:
                found.append(f"line {node.lineno}: calls {name}, a property")
    for node in tests:
        if isinstance(node, ast.Attribute) and kinds.get(node.attr) == {"method"} and node.attr not in own_methods:
            found.append(f"line {node.lineno}: tests {node.attr} without calling it (a method)")
    return found


def _project_methods() -> set:
    return {f.name for pkg in ("engines", "runtime", "calib", "export", "iaunet", "train")
            for p in (ROOT / pkg).rglob("*.py") for cls in ast.walk(ast.parse(p.read_text()))
            if isinstance(cls, ast.ClassDef) for f in cls.body if isinstance(f, ast.FunctionDef)}


def _resolve(tree, name: str):
    """The value assigned to ``name`` in a module, following ``from iaunet.core.X import name``."""
    for n in ast.walk(tree):
        if isinstance(n, ast.Assign) and any(getattr(t, "id", None) == name for t in n.targets):
            return n.value
        if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("iaunet.core.") \
                and any(a.name == name for a in n.names):
            source = ROOT / "iaunet" / "core" / (n.module.split(".")[-1] + ".py")
            return _resolve(ast.parse(source.read_text()), name)
    raise AssertionError(f"{name} is not assigned in the module")


def _used_names(path: Path) -> tuple:
    """(minimum version, {(alias kind, name)}) of a module: names read off ``tensorrt``
    and ``tensorrt.plugin`` aliases."""
    tree = ast.parse(path.read_text())
    minimum = None
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "TRT_MIN_VERSION" for t in node.targets):
            minimum = node.value
        if isinstance(node, ast.FunctionDef) and any(a.arg == "trt" for a in node.args.args):
            aliases["trt"] = "trt"  # the imported module passed in by the caller
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in ("tensorrt", "tensorrt.plugin"):
                    aliases[a.asname or a.name] = "trtp" if a.name.endswith("plugin") else "trt"
    if isinstance(minimum, ast.Name):  # TRT_MIN_VERSION = SOME_TUPLE, here or imported from the core
        minimum = _resolve(tree, minimum.id)
    if minimum is None and GUARDED_IMPORT in path.read_text():  # the module gets tensorrt from the guard
        contract = ast.parse((ROOT / "iaunet/core/plugin_contract.py").read_text())
        minimum = _resolve(contract, "TRT_MIN_VERSION")
        while isinstance(minimum, ast.Name):  # TRT_MIN_VERSION = IPLUGINV3_MIN_VERSION
            minimum = _resolve(contract, minimum.id)
    used = {(aliases[n.value.id], n.attr) for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in aliases}
    used |= {(aliases[n.value.value.id], n.attr) for n in ast.walk(tree)  # trt.DataType.HALF: HALF too
             if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Attribute)
             and isinstance(n.value.value, ast.Name) and n.value.value.id in aliases}
    return (ast.literal_eval(minimum) if minimum is not None else (0, 0)), used


def _plugin_methods(path: Path) -> dict:
    """{class name: (TensorRT base names, public method names)} for classes deriving from ``trt.*``."""
    out = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ClassDef):
            bases = {b.attr for b in node.bases if isinstance(b, ast.Attribute)}
            if bases:
                out[node.name] = (bases, {f.name for f in node.body if isinstance(f, ast.FunctionDef)
                                          and not f.name.startswith("_")})
    return out


@pytest.fixture(scope="module")
def wheel_names():
    return {version: _names_in_wheel(_wheel(req)) for version, req in WHEELS.items()}


@pytest.mark.parametrize("module", TRT_MODULES, ids=lambda p: p.name)
def test_every_tensorrt_name_exists_in_the_versions_the_module_supports(module, wheel_names):
    text = module.read_text()
    assert "TRT_MIN_VERSION" in text or f"{GUARDED_IMPORT}(" in text, \
        f"{module.name} uses tensorrt but declares no TRT_MIN_VERSION (nor imports it through {GUARDED_IMPORT})"
    minimum, used = _used_names(module)
    assert used, f"{module.name} imports tensorrt but uses no names from it"
    checked = 0
    for version, names in wheel_names.items():
        if version < tuple(minimum):
            continue
        checked += 1
        missing = sorted(f"{kind}.{name}" for kind, name in used
                         if (name not in names[kind]) and not (kind == "trt" and name == "__version__"))
        assert not missing, f"{module.name} uses names TensorRT {version} lacks: {missing}"
    assert checked, f"{module.name} claims no supported TensorRT version"


PLUGIN_API_MODULES = [p for p in TRT_MODULES if "tensorrt.plugin" in p.read_text()]


@pytest.mark.parametrize("module", PLUGIN_API_MODULES, ids=lambda p: p.name)
def test_tensorrt_plugin_properties_are_read_and_methods_called(module, wheel_names):
    """tensorrt.plugin's ShapeExpr.is_constant is a property and constant_value() a method:
    a name check alone passes ``expr.is_constant()``, which fails only at engine build time."""
    own = _project_methods()
    for version, names in wheel_names.items():
        misuse = _member_misuse(module, names["trtp_members"], own)
        assert not misuse, f"{module.name} against tensorrt.plugin {version}: {misuse}"


def test_the_member_check_catches_a_called_property(wheel_names, tmp_path):
    kinds = wheel_names[(11, 4)]["trtp_members"]
    assert kinds["is_constant"] == {"property"} and kinds["constant_value"] == {"method"}
    probe = tmp_path / "probe.py"
    probe.write_text("def f(e):\n    if not e.is_constant():\n        return e.constant_value\n"
                     "    return e.constant_value() if e.constant_value else 0\n")
    assert _member_misuse(probe, kinds, set()) == ["line 2: calls is_constant, a property",
                                                   "line 4: tests constant_value without calling it (a method)"]


def test_the_checker_catches_a_name_only_newer_versions_have(wheel_names, tmp_path):
    """The wheels tell versions apart as TENSORRT.md says (the implicit INT8 calibrator
    exists in 10.3 and is gone in 11.4; tensorrt.plugin exists only in 11.4 of the two),
    and a module claiming 10.3 that uses the calibrator would be caught on 11.4."""
    names_103, names_114 = wheel_names[(10, 3)], wheel_names[(11, 4)]
    assert "device_memory_size_v2" in names_103["trt"] and "device_memory_size_v2" in names_114["trt"]
    assert "IInt8EntropyCalibrator2" in names_103["trt"] and "IInt8EntropyCalibrator2" not in names_114["trt"]
    assert not names_103["has_plugin"] and {"register", "aot_impl", "KernelLaunchParams"} <= names_114["trtp"]
    probe = tmp_path / "probe.py"
    probe.write_text("import tensorrt as trt\nTRT_MIN_VERSION = (10, 3)\nx = trt.IInt8EntropyCalibrator2\n")
    minimum, used = _used_names(probe)
    assert minimum == (10, 3) and ("trt", "IInt8EntropyCalibrator2") in used
    assert "IInt8EntropyCalibrator2" not in wheel_names[(11, 4)]["trt"]  # so the module test would fail for 11.4


# Methods TensorRT's Python trampolines call without a default (NVIDIA/TensorRT
# python/src/infer/pyPlugin.cpp: "no implementation provided for ...()"), per V3 interface.
V3_REQUIRED = {"get_capability_interface", "clone", "get_fields_to_serialize",                    # core
               "supports_format_combination", "get_output_data_types", "get_output_shapes",        # build
               "configure_plugin",
               "enqueue", "set_tactic", "on_shape_change", "attach_to_context"}                    # runtime
CREATOR_REQUIRED = {"create_plugin"}
# methods called on TensorRT objects the module does not name through the alias
V3_OBJECT_NAMES = {"get_creator", "register_creator", "deregister_creator", "get_plugin_registry"}
V3_MODULE = ROOT / "runtime" / "trt_plugin_v3.py"


def test_ipluginv3_classes_implement_what_tensorrt_calls(wheel_names):
    """A misspelt override would silently leave TensorRT calling a missing method at build or run time."""
    classes = _plugin_methods(V3_MODULE)
    plugin = next(m for bases, m in classes.values() if "IPluginV3" in bases)
    creator = next(m for bases, m in classes.values() if "IPluginCreatorV3One" in bases)
    assert V3_REQUIRED <= plugin, f"missing: {sorted(V3_REQUIRED - plugin)}"
    assert CREATOR_REQUIRED <= creator
    for version, names in wheel_names.items():
        assert (V3_REQUIRED | CREATOR_REQUIRED) <= names["required"], \
            f"TensorRT {version} no longer requires {sorted((V3_REQUIRED | CREATOR_REQUIRED) - names['required'])}"
        unknown = sorted(m for m in plugin | creator | V3_OBJECT_NAMES if m not in names["trt"])
        assert not unknown, f"TensorRT {version} binds no {unknown}"


def test_string_matching_sees_merged_tails_but_not_inventions(wheel_names):
    names = wheel_names[(10, 3)]["trt"]
    assert "register_creator" in names and "deregister_creator" in names
    assert "get_output_datatypes" not in names and "IPluginV4" not in names


def _decorated(path: Path, decorator: str) -> dict:
    """{plugin id expression: parameter names} of the functions decorated ``@trtp.<decorator>(id)``."""
    out = {}
    for f in (n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.FunctionDef)):
        for d in f.decorator_list:
            if isinstance(d, ast.Call) and getattr(d.func, "attr", None) == decorator:
                out[ast.dump(d.args[0])] = [a.arg for a in f.args.args]
    return out


def test_aot_impl_signatures_follow_their_registration():
    """tensorrt.plugin refuses at registration an aot_impl whose parameters are not the
    register function's, then ``outputs, tactic`` (_validate_aot_impl in the 11.4 wheel)."""
    module = ROOT / "engines" / "aot_plugins.py"
    registered, aot = _decorated(module, "register"), _decorated(module, "aot_impl")
    assert registered and registered.keys() == aot.keys()
    for plugin_id, params in registered.items():
        assert aot[plugin_id] == params + ["outputs", "tactic"], (plugin_id, aot[plugin_id])


# members called on TensorRT objects (not read off the module), per module
MEMBERS = {
    "engines/builder.py": ("create_network", "parse", "num_errors", "get_error", "node_name", "node_operator",
                           "desc", "DLA_core", "get_layer", "num_layers", "can_run_on_DLA"),
    "runtime/trt_runner.py": ("deserialize_cuda_engine", "create_execution_context", "get_tensor_profile_shape",
                              "get_tensor_dtype", "get_tensor_shape", "set_tensor_address", "execute_async_v3",
                              "set_input_shape", "DLA_core"),
}
# the runner's TensorRT objects, whose every member called must be listed above
TRT_OBJECTS = {"runtime/trt_runner.py": ("self._engine", "self._execution")}


@pytest.mark.parametrize("rel", sorted(MEMBERS))
def test_members_called_on_tensorrt_objects_exist(rel, wheel_names):
    source = (ROOT / rel).read_text()
    for member in MEMBERS[rel]:
        assert re.search(rf"\.{member}\b", source), f"{member} is listed but {rel} does not use it"
    for version, names in wheel_names.items():
        missing = [m for m in MEMBERS[rel] if m not in names["trt"]]
        assert not missing, f"{rel} calls members TensorRT {version} lacks: {missing}"


@pytest.mark.parametrize("rel", sorted(TRT_OBJECTS))
def test_every_member_called_is_listed(rel):
    source = (ROOT / rel).read_text()
    called = {m for obj in TRT_OBJECTS[rel] for m in re.findall(rf"{re.escape(obj)}\.(\w+)", source)}
    assert called and not called - set(MEMBERS[rel]), f"{rel} calls unlisted members: {called - set(MEMBERS[rel])}"


def test_the_member_list_catches_a_missing_member(wheel_names):
    assert "execute_async_v3" in wheel_names[(10, 3)]["trt"]
    assert "execute_async_v9" not in wheel_names[(10, 3)]["trt"]
