"""Run in a subprocess by test_trtp_contract.py, with NVIDIA's ``tensorrt.plugin`` (from a
binding wheel) over the stand-in compiled module, and a chosen NumPy, first on the path.
Does what TensorRT does with the toolkit's AOT plugins up to the kernel: imports
``tensorrt.plugin``, registers the plugins through its decorators (the toolkit's
``_define_aot_plugins``), then creates each plugin from the creator in the registry with
the fields TensorRT's ONNX parser makes from the node's attributes (onnx-tensorrt
``onnxOpImporters.cpp`` ``loadFields``: an INT attribute becomes a ``kINT32`` field of one
element; the creator's declared field types select nothing, only its field names do).
With ``routes``, switches between the two plugin routes in one process instead (the
Python IPluginV3 creators of iaunet.runtime.trt_plugin_v3 and tensorrt.plugin's) and
reports which creator the registry holds after each step. Prints one JSON object."""
import json
import sys
import traceback

import numpy as np


def main(frames: int, parts: int) -> dict:
    import tensorrt as trt
    import tensorrt.plugin as trtp  # noqa: F401  the wheel's own package
    from iaunet.core.plugin_contract import CHANNEL_OP, PART_OP, PLUGIN_NAMESPACE, PLUGIN_VERSION
    from iaunet.engines import aot_plugins
    out = {"numpy": np.__version__, "tensorrt": trt.__version__, "plugin_module": trtp.__file__}
    aot_plugins._define_aot_plugins(trt)
    registry = trt.get_plugin_registry()
    fields = {CHANNEL_OP: [], PART_OP: [trt.PluginField("frames", np.array([frames], np.int32), trt.PluginFieldType.INT32),
                                        trt.PluginField("parts", np.array([parts], np.int32), trt.PluginFieldType.INT32)]}
    for op, op_fields in fields.items():
        creator = registry.get_creator(op, PLUGIN_VERSION, PLUGIN_NAMESPACE)
        entry = out.setdefault(op, {"registered": creator is not None})
        if creator is None:
            continue
        entry["creator_fields"] = sorted((f.name, f.type.name) for f in creator.field_names)
        try:
            plugin = creator.create_plugin(op, PLUGIN_NAMESPACE, trt.PluginFieldCollection(op_fields),
                                           trt.TensorRTPhase.BUILD, trt.QuickPluginCreationRequest.STRICT_AOT)
        except Exception as exc:  # what TensorRT's trampoline would turn into a failed plugin creation
            entry["error"] = f"{type(exc).__name__}: {exc}"
            entry["traceback"] = traceback.format_exc()[-800:]
            continue
        entry["plugin_class"] = type(plugin).__name__
        entry["attrs"] = {k: int(np.asarray(v).reshape(-1)[0]) for k, v in plugin.attrs.items()}
        entry["attr_types"] = {k: type(v).__name__ for k, v in plugin.attrs.items()}
    return out


def routes(ptx_dir: str, v3_first: bool) -> dict:
    """Which creator TensorRT's registry holds after each registration, in the order a
    process meets them (GPU tests in one session; a build after a run)."""
    import tensorrt as trt
    from iaunet.core import cuda_driver
    from iaunet.core.errors import IAUnetError
    from iaunet.core.plugin_contract import CHANNEL_OP, PLUGIN_NAMESPACE, PLUGIN_VERSION
    from iaunet.engines import aot_plugins
    from iaunet.runtime import trt_plugin_v3
    cuda_driver.check_arch = lambda arch, what: None  # no GPU here; the arch check is the driver's, not the contract's
    holder = lambda: type(trt.get_plugin_registry().get_creator(CHANNEL_OP, PLUGIN_VERSION, PLUGIN_NAMESPACE)).__name__
    steps = []
    try:
        aot_plugins.register_aot_plugins(None)
        steps.append(["aot without ptx", "accepted"])
    except IAUnetError as exc:
        steps.append(["aot without ptx", f"IAUnetError: {exc}"])
    except Exception as exc:
        steps.append(["aot without ptx", f"{type(exc).__name__}: {exc}"])
    order = [("v3", trt_plugin_v3.register_plugins), ("aot", aot_plugins.register_aot_plugins)]
    order = order if v3_first else order[::-1]
    for name, register in order + order:
        try:
            register(ptx_dir)
            steps.append([name, holder()])
        except Exception as exc:
            steps.append([name, f"{type(exc).__name__}: {exc}"])
    return {"steps": steps}


if __name__ == "__main__":
    if sys.argv[1] == "routes":
        print(json.dumps(routes(sys.argv[2], sys.argv[3] == "v3-first")))
    else:
        print(json.dumps(main(int(sys.argv[1]), int(sys.argv[2]))))
