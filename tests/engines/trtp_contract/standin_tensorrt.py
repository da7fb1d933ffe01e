"""The smallest stand-in for TensorRT's compiled module (``tensorrt.tensorrt``, the
pybind11 extension) that lets NVIDIA's pure-Python ``tensorrt.plugin`` from a binding
wheel import and run its registration and plugin-creation code. Used only by the
contract tests with ``tensorrt.plugin`` (test_trtp_contract.py), copied there as
``tensorrt/__init__.py`` beside the wheel's own ``plugin/`` package; never on the
import path of the toolkit or of other tests.

Each behaviour a test depends on names the bindings' C++ source it mirrors
(NVIDIA/TensorRT, ``python/src``, tags v10.9.0, release/10.13, v10.16, v11.1; 11.4's
sources are not public, its wheel's Python is what runs). Everything else is a bare name:
``tensorrt.plugin`` needs the class to exist at import (as a base class or an annotation)
and the tests never reach its behaviour. Nothing here computes anything TensorRT would.
"""
import enum
import os

import numpy as np

__version__ = os.environ["IAUNET_STANDIN_TRT_VERSION"]  # the binding wheel's own __version__


class _Bare:
    """A class that must exist for tensorrt.plugin to import; its behaviour is never used."""
    def __init__(self, *args, **kwargs):
        pass


# --- pyCore.cpp: py::class_<DefaultLogger, ILogger>(m, "Logger"); ILogger.Severity values
class ILogger(_Bare):
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

    def log(self, severity, msg):  # pyCore.cpp ILogger.log: the default logger prints; nothing to check here
        pass


class Logger(ILogger):
    pass


# --- pyFoundationalTypes.cpp: py::enum_<DataType>(m, "DataType") (names as bound; values unused)
class DataType(enum.IntEnum):
    FLOAT, HALF, INT8, INT32, BOOL, UINT8, FP8, BF16, INT64, INT4, FP4, E8M0 = range(12)


float32, float16, int8, int32, uint8, bfloat16, int64 = (  # pyFoundationalTypes.cpp m.attr (not trt.bool:
    DataType.FLOAT, DataType.HALF, DataType.INT8, DataType.INT32, DataType.UINT8, DataType.BF16,  # it would
    DataType.INT64)                                                                                   # shadow bool)
fp8, int4, fp4 = DataType.FP8, DataType.INT4, DataType.FP4


def nptype(trt_type):  # python/packaging/bindings_wheel/tensorrt/__init__.py: nptype
    return {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8, DataType.INT32: np.int32,
            DataType.BOOL: np.bool_, DataType.UINT8: np.uint8, DataType.INT64: np.int64}[trt_type]


class Dims(_Bare):  # pyFoundationalTypes.cpp: Dims.MAX_DIMS = nvinfer1::Dims::MAX_DIMS (8)
    MAX_DIMS = 8


class TensorFormat(enum.IntEnum):  # pyGraph.cpp: py::enum_<TensorFormat>
    LINEAR, CHW2, HWC8, CHW4, CHW16, CHW32, DHWC8, CDHW32, HWC, DLA_LINEAR, DLA_HWC4, HWC16, DHWC = range(13)


# --- pyPlugin.cpp: py::enum_<PluginFieldType>(m, "PluginFieldType")
class PluginFieldType(enum.IntEnum):
    FLOAT16, FLOAT32, FLOAT64, INT8, INT16, INT32, CHAR, DIMS, UNKNOWN, BF16, INT64, FP8, INT4, FP4 = range(14)


# the element type pyPlugin.cpp's PluginField "data" getter returns per field type:
#   case PluginFieldType::kINT32: return py::array(self.length, static_cast<int32_t const*>(self.data)); ...
_FIELD_DTYPES = {PluginFieldType.INT32: np.int32, PluginFieldType.INT8: np.int8, PluginFieldType.INT16: np.int16,
                 PluginFieldType.FLOAT32: np.float32, PluginFieldType.FLOAT64: np.float64,
                 PluginFieldType.INT64: np.int64, PluginFieldType.CHAR: np.int8, PluginFieldType.FLOAT16: np.float16}


class PluginField:
    """pyPlugin.cpp ``py::class_<PluginField>(m, "PluginField")``: the constructor
    (lambdas::plugin_field_constructor) takes a buffer and stores its pointer, type and
    element count (``info.size``); ``data`` returns a NEW 1-D numpy array of ``length``
    elements of the type's C type (``py::array(self.length, ptr)``): an INT32 attribute of
    one element is an int32 array of shape (1,), never a Python int."""

    def __init__(self, name="", data=None, type=PluginFieldType.UNKNOWN):
        self.name, self.type = name, PluginFieldType(type)
        buffer = np.frombuffer(bytes(data), np.uint8) if isinstance(data, (bytes, bytearray)) else np.asarray(data)
        self._bytes = buffer.tobytes()
        self.size = buffer.size  # pyPlugin.cpp: .def_readwrite("size", &PluginField::length)

    @property
    def data(self):
        dtype = _FIELD_DTYPES.get(self.type)
        if dtype is None:  # UNKNOWN and the rest: pyPlugin.cpp returns the raw bytes as an int8/uint8 array
            return np.frombuffer(self._bytes, np.uint8).copy()
        return np.frombuffer(self._bytes, dtype)[: self.size].copy()


class PluginFieldCollection(list):
    """pyTensorRT.cpp: ``py::bind_vector<std::vector<nvinfer1::PluginField>>(m,
    "PluginFieldCollection")``: a sequence of PluginField, iterated in order."""


# --- pyPlugin.cpp: py::enum_<TensorRTPhase>, py::enum_<QuickPluginCreationRequest> (10.9+)
class TensorRTPhase(enum.IntEnum):
    BUILD, RUNTIME = range(2)


class QuickPluginCreationRequest(enum.IntEnum):
    UNKNOWN, PREFER_JIT, PREFER_AOT, STRICT_JIT, STRICT_AOT = range(5)


class PluginArgType(enum.IntEnum):  # pyPlugin.cpp py::enum_<PluginArgType>
    INT = 0


class PluginArgDataType(enum.IntEnum):  # pyPlugin.cpp py::enum_<PluginArgDataType>
    INT8, INT16, INT32 = range(3)


class DimensionOperation(enum.IntEnum):  # pyPlugin.cpp py::enum_<DimensionOperation>
    SUM, PROD, MAX, MIN, SUB, EQUAL, LESS, FLOOR_DIV, CEIL_DIV = range(9)


# bases and annotations tensorrt.plugin names at import (pyPlugin.cpp binds each; unused here)
class IPluginV3(_Bare): pass  # noqa: E701
class IPluginV3QuickCore(_Bare): pass  # noqa: E701
class IPluginV3QuickBuild(_Bare): pass  # noqa: E701
class IPluginV3QuickRuntime(_Bare): pass  # noqa: E701
class IPluginV3QuickAOTBuild(_Bare): pass  # noqa: E701
class IPluginCreatorV3Quick(_Bare): pass  # noqa: E701
class IPluginV3OneCore(_Bare): pass  # noqa: E701  (iaunet.runtime.trt_plugin_v3's bases)
class IPluginV3OneBuild(_Bare): pass  # noqa: E701
class IPluginV3OneRuntime(_Bare): pass  # noqa: E701
class IPluginCreatorV3One(_Bare): pass  # noqa: E701
class ISymExpr(_Bare): pass  # noqa: E701
class IDimensionExpr(_Bare): pass  # noqa: E701
class IExprBuilder(_Bare): pass  # noqa: E701
class DimsExprs(_Bare): pass  # noqa: E701
class DynamicPluginTensorDesc(_Bare): pass  # noqa: E701
class PluginTensorDesc(_Bare): pass  # noqa: E701
class ITensor(_Bare): pass  # noqa: E701
class KernelLaunchParams(_Bare): pass  # noqa: E701
class IPluginResourceContext(_Bare): pass  # noqa: E701


class IPluginRegistry:
    """pyPlugin.cpp ``py::class_<IPluginRegistry>``: ``register_creator(creator,
    plugin_namespace)`` keeps the creator under its (name, version, namespace) and
    returns True; ``get_creator(type, version, plugin_namespace)`` returns it or None
    (lambdas::get_creator)."""

    def __init__(self):
        self._creators = {}

    def register_creator(self, creator, plugin_namespace=""):
        key = (creator.name, str(getattr(creator, "plugin_version", "1")), plugin_namespace)
        self._creators[key] = creator
        return True

    def get_creator(self, type, version, plugin_namespace=""):
        return self._creators.get((type, str(version), plugin_namespace))

    def deregister_creator(self, creator):
        found = [k for k, c in self._creators.items() if c is creator]
        for k in found:
            del self._creators[k]
        return bool(found)


_REGISTRY = IPluginRegistry()


def get_plugin_registry():  # pyCore.cpp m.def("get_plugin_registry", &getPluginRegistry): one per process
    return _REGISTRY
