"""TensorRT plugins for the IAU ops as Python ``IPluginV3`` classes: the route for
TensorRT 10.3 to 10.8 (JetPack 6 on Orin), and usable on every later version.

One plugin class serves both ops (``iaunet::IAUChannelAffinity``, ``iaunet::IAUPartAffinity``,
version "1", named as the ONNX nodes); a creator per op. At build time the creator picks
the kernel for the input's dtype and H*W (or part count) from a PTX folder written by
``iaunet plugins compile`` (the aligned variant with the general one as its fallback for
misaligned tensors), and the plugin serialises those kernels into the engine (all of
the op's variants if TensorRT serialises a plugin it never configured). At run
time the plugin loads the PTX into TensorRT's CUDA context once and launches it through
the CUDA driver on the stream TensorRT gives ``enqueue`` (see ``iaunet.core.cuda_driver``).

An engine that uses these plugins can be deserialized only in a process that called
``register_plugins()`` first (no PTX folder is needed then). Outputs have the input's
shape and dtype (strongly typed networks); only the batch may be dynamic; inputs other
than float32/float16 are refused with a message naming the op.

Nothing here imports TensorRT until a function is called: ``runtime`` stays numpy-only.
Checked against the 10.3 and 11.4 binding wheels (tests/engines/test_trt_names.py); it
cannot run on a machine without TensorRT's libraries and a GPU.
"""
from __future__ import annotations

import functools

import numpy as np

from iaunet.core import cuda_driver
from iaunet.core.errors import IAUnetError
from iaunet.core.plugin_contract import (IPLUGINV3_MIN_VERSION, OP_ATTRIBUTES, PLUGIN_NAMESPACE, PLUGIN_OPS,
                                         PLUGIN_VERSION, PtxManifest, check_shape, choose_kernels, dtype_name,
                                         for_pointers, kernels_from_bytes, kernels_to_bytes, tensorrt_version)

TRT_MIN_VERSION = IPLUGINV3_MIN_VERSION
KERNEL_FIELD = "iaunet_kernels"
_REGISTERED = {}  # op -> creator: TensorRT's registry must not outlive the Python objects


def _dims(dims) -> tuple:
    return tuple(int(dims[i]) for i in range(len(dims)))


def _attributes(op: str, fields) -> tuple:
    """(integer attributes, serialised kernels, possibly none) from a PluginFieldCollection."""
    attrs, kernels = {}, []
    for f in fields or ():
        if f.name == KERNEL_FIELD:
            kernels = kernels_from_bytes(f.data.tobytes())
        elif f.name in OP_ATTRIBUTES[op]:
            attrs[f.name] = int(f.data[0])
    missing = [a for a in OP_ATTRIBUTES[op] if a not in attrs]
    if missing:
        raise IAUnetError(f"{op} node lacks the attributes {missing}; re-export the model with 'iaunet export'")
    return attrs, kernels


@functools.lru_cache(maxsize=None)
def _plugin_classes(trt):
    """The plugin and creator classes, defined once TensorRT is imported."""
    class IAUPlugin(trt.IPluginV3, trt.IPluginV3OneCore, trt.IPluginV3OneBuild, trt.IPluginV3OneRuntime):
        def __init__(self, op: str, attrs: dict, kernels: list, manifest):
            trt.IPluginV3.__init__(self)
            trt.IPluginV3OneCore.__init__(self)
            trt.IPluginV3OneBuild.__init__(self)
            trt.IPluginV3OneRuntime.__init__(self)
            self.plugin_name, self.plugin_namespace, self.plugin_version = op, PLUGIN_NAMESPACE, PLUGIN_VERSION
            self.num_outputs = 1
            self.op, self.attrs, self.kernels, self.manifest = op, dict(attrs), list(kernels), manifest
            self.choices = []  # what on_shape_change chose for the current input: aligned first, then general
            self._serialized = None

        # core
        def get_capability_interface(self, capability):
            return self

        def clone(self):
            twin = IAUPlugin(self.op, self.attrs, self.kernels, self.manifest)
            twin.choices = list(self.choices)
            return twin

        def get_fields_to_serialize(self):
            fields = [trt.PluginField(a, np.array([self.attrs[a]], np.int32), trt.PluginFieldType.INT32)
                      for a in OP_ATTRIBUTES[self.op]]
            kernels = self.kernels or (self.manifest.variants(self.op) if self.manifest is not None else [])
            if kernels:
                blob = np.frombuffer(kernels_to_bytes(kernels), np.int8)
                fields.append(trt.PluginField(KERNEL_FIELD, blob, trt.PluginFieldType.INT8))
            # TensorRT keeps a C copy of the collection that points into these Python objects:
            # hold them until the next call instead of leaving them to the garbage collector
            self._serialized = trt.PluginFieldCollection(fields), fields
            return self._serialized[0]

        # build
        def get_output_data_types(self, input_types):
            dtype_name(trt, input_types[0], self.op)
            return [input_types[0]]

        def get_output_shapes(self, inputs, shape_inputs, expr_builder):
            if len(inputs) != 1 or len(inputs[0]) != 3:
                raise IAUnetError(f"{self.op} takes one rank-3 input ([B, K, L] or [B, N, N])")
            return [trt.DimsExprs(inputs[0])]

        def supports_format_combination(self, pos, in_out, num_inputs):
            desc = in_out[pos].desc
            if desc.format != trt.TensorFormat.LINEAR or desc.type not in (trt.DataType.FLOAT, trt.DataType.HALF):
                return False
            return pos == 0 or desc.type == in_out[0].desc.type

        def configure_plugin(self, inputs, outputs):
            desc = inputs[0].desc
            dims = _dims(desc.dims)
            if any(d < 0 for d in dims[1:]):
                raise IAUnetError(f"{self.op} input {dims}: only the batch may be dynamic")
            check_shape(self.op, (1,) + dims[1:], self.attrs)
            if self.manifest is None:
                raise IAUnetError("building an engine with the IAU plugins needs their PTX: call "
                                  "register_plugins(ptx_dir) with the output of 'iaunet plugins compile'")
            dtype = dtype_name(trt, desc.type, self.op)
            best = self.manifest.select(self.op, dtype, dims[2])
            general = self.manifest.select(self.op, dtype, dims[2], aligned=False)
            # the general variant travels too: enqueue falls back to it for misaligned tensors
            self.kernels = [best] + ([general] if general != best else [])

        # runtime
        def set_tactic(self, tactic):
            pass

        def on_shape_change(self, inputs, outputs):
            shape = _dims(inputs[0].dims)
            check_shape(self.op, shape, self.attrs)
            if not self.kernels:
                raise IAUnetError(f"this engine's {self.op} carries no kernel; rebuild it with this version of iaunet")
            dtype = dtype_name(trt, inputs[0].type, self.op)
            self.choices = choose_kernels(self.kernels, self.op, dtype, shape[2])

        def attach_to_context(self, context):
            return self.clone()

        def enqueue(self, input_desc, output_desc, inputs, outputs, workspace, stream):
            src, dst = int(inputs[0]), int(outputs[0])
            cuda_driver.run_kernel(for_pointers(self.choices, src, dst), _dims(input_desc[0].dims), self.attrs,
                                   src, dst, int(stream))

    class IAUPluginCreator(trt.IPluginCreatorV3One):
        def __init__(self, op: str, manifest):
            trt.IPluginCreatorV3One.__init__(self)
            self.name, self.plugin_namespace, self.plugin_version = op, PLUGIN_NAMESPACE, PLUGIN_VERSION
            self.op, self.manifest = op, manifest
            self.field_names = trt.PluginFieldCollection(
                [trt.PluginField(a, np.array([], np.int32), trt.PluginFieldType.INT32) for a in OP_ATTRIBUTES[op]])

        def create_plugin(self, name, fields, phase):
            attrs, kernels = _attributes(self.op, fields)
            return IAUPlugin(self.op, attrs, kernels, self.manifest)

    return IAUPlugin, IAUPluginCreator


def registered() -> bool:
    """Whether this process registered the IPluginV3 creators."""
    return bool(_REGISTERED)


def register_plugins(ptx_dir=None) -> list:
    """Register both IPluginV3 creators with TensorRT's plugin registry (again: replaced).
    ``ptx_dir`` (from ``iaunet plugins compile``) is needed to build engines, not to run them.
    Returns the registered names."""
    import tensorrt as trt
    if tensorrt_version(trt) < TRT_MIN_VERSION:
        raise IAUnetError(f"TensorRT {trt.__version__} is too old for the IAU plugins; expected "
                          f"{'.'.join(map(str, TRT_MIN_VERSION))} or newer")
    manifest = PtxManifest(ptx_dir) if ptx_dir is not None else None
    if manifest is not None:
        cuda_driver.check_arch(manifest.arch, f"{ptx_dir} holds PTX")
    _, creator_class = _plugin_classes(trt)
    registry = trt.get_plugin_registry()
    names = []
    for op in PLUGIN_OPS:
        existing = registry.get_creator(op, PLUGIN_VERSION, PLUGIN_NAMESPACE)
        if existing is not None:
            registry.deregister_creator(existing)
        creator = creator_class(op, manifest)
        if not registry.register_creator(creator, PLUGIN_NAMESPACE):
            raise IAUnetError(f"TensorRT refused to register the {PLUGIN_NAMESPACE}::{op} plugin creator")
        _REGISTERED[op] = creator
        names.append(f"{PLUGIN_NAMESPACE}::{op}")
    return names
