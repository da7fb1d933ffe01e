"""TensorRT plugins for the IAU ops, TensorRT 10.9 and newer: quickly deployable plugins
(``tensorrt.plugin``) with ahead-of-time implementations, so the engine embeds the PTX
and runs without Python.

Names follow the ONNX nodes: ``iaunet::IAUChannelAffinity`` and ``iaunet::IAUPartAffinity``
(plugin version "1"). Outputs have the input's shape and dtype (strongly typed networks).
Scalars are baked at build time (TensorRT does not serialise AOT plugin attributes); the
batch stays dynamic through the grid. The part op's integer attributes are declared as
int32 arrays, not ``int``: the ONNX parser hands an INT attribute as an INT32 field of one
element, and ``tensorrt.plugin`` 10.9 to 10.16 turns an ``int`` field into ``int(field.data)``,
which NumPy 2.4 refuses for a 1-element array (11.4 reads ``field.data[0]``); an array
annotation takes ``field.data.astype(int32)`` on every version. Kernels that need more than
48 KiB of dynamic shared memory are refused on this route: TensorRT's AOT launch path does
not document raising a kernel's shared-memory limit (the IPluginV3 route raises it itself). Only float32 and float16 inputs are accepted. The
PTX entries take exactly TensorRT's arguments (inputs, scalars, outputs; see engines.aot).
Where H*W is a multiple of 16 the aligned channel variant is chosen: TensorRT's tensors
are allocated with at least 256-byte alignment.

For TensorRT 10.3 to 10.8 the route is ``iaunet.runtime.trt_plugin_v3`` (Python IPluginV3).

Kept thin and checked against the binding wheels (tests/engines/test_trt_names.py); it
cannot run here (no TensorRT libraries). No ``from __future__ import annotations``: the
registration reads the annotations as classes.
"""
import importlib.util
from typing import Tuple, Union

import numpy as np
import numpy.typing as npt

from iaunet.core.errors import IAUnetError
from iaunet.core import cuda_driver
from iaunet.core.cuda_driver import STATIC_SHARED_LIMIT
from iaunet.core.plugin_contract import (CHANNEL_OP, PART_OP, PLUGIN_NAMESPACE, PLUGIN_OPS, PLUGIN_VERSION, PtxManifest,
                                         dtype_name, tensorrt_version)

MIN_AOT_VERSION = (10, 9)
TRT_MIN_VERSION = MIN_AOT_VERSION  # every TensorRT name below is checked against wheels >= this


def supports_aot_plugins(trt) -> bool:
    return (tensorrt_version(trt) >= MIN_AOT_VERSION
            and importlib.util.find_spec("tensorrt.plugin") is not None)


def _constant(expr, what: str) -> int:
    if not expr.is_constant:  # a property in tensorrt.plugin; constant_value() is a method
        raise IAUnetError(f"{what} must be fixed when the engine is built (only the batch may be dynamic)")
    return int(expr.constant_value())


def attribute_int(value) -> int:
    """A plugin attribute as TensorRT hands it (an int32 array of one element) as an int."""
    flat = np.asarray(value).reshape(-1)
    if flat.size != 1:
        raise IAUnetError(f"expected one integer in the plugin attribute, got {flat.size} values")
    return int(flat[0])


def check_shared_memory(kernel) -> None:
    """Refuse a kernel that needs more dynamic shared memory than a launch gets by default
    (48 KiB): only the IPluginV3 route raises the limit (cuFuncSetAttribute)."""
    if kernel.shared_bytes > STATIC_SHARED_LIMIT:
        raise IAUnetError(f"{kernel.entry} needs {kernel.shared_bytes} bytes of shared memory, more than the "
                          f"{STATIC_SHARED_LIMIT // 1024} KiB the AOT plugin route can rely on; build with "
                          "--plugins python (the IPluginV3 route raises the limit) or compile smaller blocks")


def _aot_result(trtp, kernel, grid_x: int, batch_expr, scalars: tuple):
    """(entry, PTX, launch parameters, scalar arguments) for one plugin kernel: grid x from
    the fixed sizes, grid y the (dynamic) batch, scalars baked in at build time."""
    check_shared_memory(kernel)
    launch = trtp.KernelLaunchParams()
    launch.grid_x = grid_x
    launch.grid_y = batch_expr
    launch.block_x = kernel.block[0]
    launch.shared_mem = kernel.shared_bytes
    extra = trtp.SymIntExprs(len(scalars))
    for i, value in enumerate(scalars):
        extra[i] = trtp.SymInt32(value)
    return kernel.entry, kernel.ptx, launch, extra


_ACTIVE = {}  # the PTX folder the registered plugins serve, and tensorrt.plugin's creators (it registers a name once)


def register_aot_plugins(ptx_dir) -> list:
    """Register both plugins with TensorRT's plugin registry; returns their ids. Calling it
    again in the same process switches the PTX folder. Where the IPluginV3 route
    (iaunet.runtime.trt_plugin_v3) registered its creators under the same names since,
    tensorrt.plugin's creators are put back, so the next build takes this route."""
    import tensorrt as trt
    if ptx_dir is None:
        raise IAUnetError("building with the AOT plugins needs their PTX: pass --ptx DIR (the output of "
                          "'iaunet plugins compile', or a bundle's ptx folder)")
    if not supports_aot_plugins(trt):
        raise IAUnetError(f"TensorRT {trt.__version__} has no ahead-of-time Python plugins (needs 10.9+); "
                          "use the IPluginV3 route for JetPack 6")
    manifest = PtxManifest(ptx_dir)
    cuda_driver.check_arch(manifest.arch, f"{ptx_dir} holds PTX")
    registry = trt.get_plugin_registry()
    if "creators" not in _ACTIVE:
        for op in PLUGIN_OPS:  # the other route's creators would stop tensorrt.plugin registering its own
            existing = registry.get_creator(op, PLUGIN_VERSION, PLUGIN_NAMESPACE)
            if existing is not None:
                registry.deregister_creator(existing)
        _define_aot_plugins(trt)
        _ACTIVE["creators"] = {op: registry.get_creator(op, PLUGIN_VERSION, PLUGIN_NAMESPACE) for op in PLUGIN_OPS}
    for op, creator in _ACTIVE["creators"].items():
        current = registry.get_creator(op, PLUGIN_VERSION, PLUGIN_NAMESPACE)
        if current is not creator:
            if current is not None:
                registry.deregister_creator(current)
            if not registry.register_creator(creator, PLUGIN_NAMESPACE):
                raise IAUnetError(f"TensorRT refused to register the AOT {PLUGIN_NAMESPACE}::{op} plugin creator")
    _ACTIVE["manifest"] = manifest
    return [f"{PLUGIN_NAMESPACE}::{op}" for op in PLUGIN_OPS]


def _define_aot_plugins(trt) -> None:
    import tensorrt.plugin as trtp

    @trtp.register(f"{PLUGIN_NAMESPACE}::{CHANNEL_OP}")
    def channel_desc(x: trtp.TensorDesc) -> Tuple[trtp.TensorDesc]:
        return x.like()

    @trtp.aot_impl(f"{PLUGIN_NAMESPACE}::{CHANNEL_OP}")
    def channel_aot(x: trtp.TensorDesc, outputs: Tuple[trtp.TensorDesc], tactic: int
                    ) -> Tuple[Union[str, bytes], Union[str, bytes], trtp.KernelLaunchParams, trtp.SymExprs]:
        k = _constant(x.shape_expr[1], "the channel count K")
        l = _constant(x.shape_expr[2], "H*W")
        kernel = _ACTIVE["manifest"].select(CHANNEL_OP, dtype_name(trt, x.dtype, CHANNEL_OP), l)
        return _aot_result(trtp, kernel, kernel.grid(1, k)[0], x.shape_expr[0], (k, l))

    @trtp.register(f"{PLUGIN_NAMESPACE}::{PART_OP}")
    def part_desc(s: trtp.TensorDesc, frames: npt.NDArray[np.int32], parts: npt.NDArray[np.int32]
                  ) -> Tuple[trtp.TensorDesc]:
        return s.like()

    @trtp.aot_impl(f"{PLUGIN_NAMESPACE}::{PART_OP}")
    def part_aot(s: trtp.TensorDesc, frames: npt.NDArray[np.int32], parts: npt.NDArray[np.int32],
                 outputs: Tuple[trtp.TensorDesc], tactic: int
                 ) -> Tuple[Union[str, bytes], Union[str, bytes], trtp.KernelLaunchParams, trtp.SymExprs]:
        frames, parts = attribute_int(frames), attribute_int(parts)
        n = _constant(s.shape_expr[1], "the part-node count N")
        if n != frames * parts:
            raise IAUnetError(f"IAUPartAffinity input has N={n} but frames*parts={frames * parts}")
        kernel = _ACTIVE["manifest"].select(PART_OP, dtype_name(trt, s.dtype, PART_OP), n)
        return _aot_result(trtp, kernel, kernel.grid(1, n)[0], s.shape_expr[0], (n, parts))
