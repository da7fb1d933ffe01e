"""TensorRT plugins for the IAU ops, TensorRT 10.9 and newer: quickly deployable plugins
(``tensorrt.plugin``) with ahead-of-time implementations, so the engine embeds the PTX
and runs without Python.

Names follow the ONNX nodes: ``iaunet::IAUChannelAffinity`` and ``iaunet::IAUPartAffinity``
(plugin version "1"). Outputs have the input's shape and dtype (strongly typed networks).
Scalars are baked at build time (TensorRT does not serialise AOT plugin attributes); the
batch stays dynamic through the grid. Only float32 and float16 inputs are accepted. The
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

from iaunet.core.errors import IAUnetError
from iaunet.core import cuda_driver
from iaunet.core.plugin_contract import (CHANNEL_OP, PART_OP, PLUGIN_NAMESPACE, PLUGIN_VERSION, PtxManifest,
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


def _aot_result(trtp, kernel, grid_x: int, batch_expr, scalars: tuple):
    """(entry, PTX, launch parameters, scalar arguments) for one plugin kernel: grid x from
    the fixed sizes, grid y the (dynamic) batch, scalars baked in at build time."""
    launch = trtp.KernelLaunchParams()
    launch.grid_x = grid_x
    launch.grid_y = batch_expr
    launch.block_x = kernel.block[0]
    launch.shared_mem = kernel.shared_bytes
    extra = trtp.SymIntExprs(len(scalars))
    for i, value in enumerate(scalars):
        extra[i] = trtp.SymInt32(value)
    return kernel.entry, kernel.ptx, launch, extra


_ACTIVE = {}  # the PTX folder the registered plugins serve; tensorrt.plugin registers a name only once


def register_aot_plugins(ptx_dir) -> list:
    """Register both plugins with TensorRT's plugin registry; returns their ids. Calling it
    again in the same process switches the PTX folder. A process uses one route: this
    refuses when another creator (the IPluginV3 route, iaunet.runtime.trt_plugin_v3) already
    holds these names in TensorRT's registry."""
    import tensorrt as trt
    if not supports_aot_plugins(trt):
        raise IAUnetError(f"TensorRT {trt.__version__} has no ahead-of-time Python plugins (needs 10.9+); "
                          "use the IPluginV3 route for JetPack 6")
    if "manifest" not in _ACTIVE and trt.get_plugin_registry().get_creator(CHANNEL_OP, PLUGIN_VERSION,
                                                                            PLUGIN_NAMESPACE) is not None:
        raise IAUnetError("this process registered the IPluginV3 IAU plugins; build AOT-plugin engines in a "
                          "separate process")
    ids = [f"{PLUGIN_NAMESPACE}::{CHANNEL_OP}", f"{PLUGIN_NAMESPACE}::{PART_OP}"]
    manifest = PtxManifest(ptx_dir)
    cuda_driver.check_arch(manifest.arch, f"{ptx_dir} holds PTX")
    first = "manifest" not in _ACTIVE
    _ACTIVE["manifest"] = manifest
    if first:
        _define_aot_plugins(trt)
    return ids


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
    def part_desc(s: trtp.TensorDesc, frames: int, parts: int) -> Tuple[trtp.TensorDesc]:
        return s.like()

    @trtp.aot_impl(f"{PLUGIN_NAMESPACE}::{PART_OP}")
    def part_aot(s: trtp.TensorDesc, frames: int, parts: int, outputs: Tuple[trtp.TensorDesc], tactic: int
                 ) -> Tuple[Union[str, bytes], Union[str, bytes], trtp.KernelLaunchParams, trtp.SymExprs]:
        n = _constant(s.shape_expr[1], "the part-node count N")
        if n != frames * parts:
            raise IAUnetError(f"IAUPartAffinity input has N={n} but frames*parts={frames * parts}")
        kernel = _ACTIVE["manifest"].select(PART_OP, dtype_name(trt, s.dtype, PART_OP), n)
        return _aot_result(trtp, kernel, kernel.grid(1, n)[0], s.shape_expr[0], (n, parts))
