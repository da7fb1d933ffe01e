"""Just enough of the protobuf wire format to read an ONNX file's metadata and plugin
nodes, to digest its weights and to drop its local functions, without the onnx package:
a Jetson builds engines with tensorrt, pycuda, numpy, Pillow and polygraphy only.

Field numbers are onnx.proto's: ModelProto ir_version 1, graph 7, metadata_props 14,
functions 25; GraphProto node 1, initializer 5, sparse_initializer 15; NodeProto op_type
4, domain 7; FunctionProto name 1, domain 10; StringStringEntryProto key 1, value 2.
Tests compare every answer with the onnx package's.

``weights_sha256`` digests the graph's initializers as they lie in the file (each one's
serialized TensorProto, in order). The writer computes it over ``graph.SerializeToString()``
and the reader over the graph's bytes inside the file: protobuf writes a submessage the
same way alone and inside its parent, so the two agree, and metadata (a field of the model,
not of the graph) can change without changing it.
"""
from __future__ import annotations

import hashlib

from iaunet.core.errors import IAUnetError

MODEL_IR_VERSION, MODEL_GRAPH, MODEL_METADATA, MODEL_FUNCTIONS = 1, 7, 14, 25
GRAPH_NODE, GRAPH_INITIALIZER, GRAPH_SPARSE_INITIALIZER = 1, 5, 15
MAX_IR_VERSION = 64  # onnx is at 10 (2024); a first field that says more is not an ONNX model
NODE_OP_TYPE, NODE_DOMAIN = 4, 7
FUNCTION_NAME, FUNCTION_DOMAIN = 1, 10
ENTRY_KEY, ENTRY_VALUE = 1, 2


def _varint(data, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def fields(data, start: int = 0, end: int | None = None):
    """Yield (field number, wire type, value start, value end) of one message's fields."""
    pos, end = start, len(data) if end is None else end
    while pos < end:
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, after = _varint(data, pos)
        elif wire == 1:
            after = pos + 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            after = pos + length
        elif wire == 5:
            after = pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if after > end:
            raise ValueError("truncated field")
        yield number, wire, pos, after
        pos = after


def _strings(data, start, end, wanted: dict) -> dict:
    out = {name: "" for name in wanted.values()}
    for number, wire, a, b in fields(data, start, end):
        if wire == 2 and number in wanted:
            out[wanted[number]] = bytes(data[a:b]).decode("utf-8", errors="replace")
    return out


def read_model(data: bytes, source) -> tuple[dict, list]:
    """(metadata_props as a dict, [(domain, op_type) of every top-level graph node])."""
    try:
        props, nodes = {}, []
        for number, wire, a, b in fields(data):
            if number == MODEL_METADATA and wire == 2:
                entry = _strings(data, a, b, {ENTRY_KEY: "key", ENTRY_VALUE: "value"})
                props[entry["key"]] = entry["value"]
            elif number == MODEL_GRAPH and wire == 2:
                for n, w, na, nb in fields(data, a, b):
                    if n == GRAPH_NODE and w == 2:
                        node = _strings(data, na, nb, {NODE_OP_TYPE: "op", NODE_DOMAIN: "domain"})
                        nodes.append((node["domain"], node["op"]))
        return props, nodes
    except ValueError as exc:
        raise IAUnetError(f"{source} is not an ONNX file ({exc})") from None


def looks_like_onnx(head: bytes) -> bool:
    """Whether a file's first bytes begin an ONNX ModelProto: the ``ir_version`` varint,
    which onnx writes first, with a plausible value. (A TensorRT engine begins otherwise.)"""
    try:
        number, wire, a, _ = next(fields(head[:16], 0))
        version, _ = _varint(head, a)
    except (ValueError, StopIteration, IndexError):
        return False
    return number == MODEL_IR_VERSION and wire == 0 and 1 <= version <= MAX_IR_VERSION


def graph_weights_sha256(graph) -> str:
    """SHA-256 of a serialized GraphProto's initializers (dense and sparse), in file order."""
    digest = hashlib.sha256()
    for number, wire, a, b in fields(graph):
        if wire == 2 and number in (GRAPH_INITIALIZER, GRAPH_SPARSE_INITIALIZER):
            digest.update(f"{number}:{b - a}:".encode())
            digest.update(graph[a:b])
    return digest.hexdigest()


def weights_sha256(data, source) -> str:
    """``graph_weights_sha256`` of the graph inside a serialized ModelProto (bytes, mmap or
    memoryview; the weights are hashed where they lie, not copied)."""
    try:
        with memoryview(data) as view:
            for number, wire, a, b in fields(view):
                if number == MODEL_GRAPH and wire == 2:
                    with view[a:b] as graph:
                        return graph_weights_sha256(graph)
    except ValueError as exc:
        raise IAUnetError(f"{source} is not an ONNX file ({exc})") from None
    raise IAUnetError(f"{source} is not an ONNX model: it holds no graph")


def drop_functions(data: bytes, domain: str, names) -> bytes:
    """The model without the local functions ``domain``::``names`` (everything else byte for byte)."""
    out, pos, names = bytearray(), 0, set(names)
    for number, wire, a, b in fields(data):
        key_start = pos
        pos = b
        if number == MODEL_FUNCTIONS and wire == 2:
            f = _strings(data, a, b, {FUNCTION_NAME: "name", FUNCTION_DOMAIN: "domain"})
            if f["domain"] == domain and f["name"] in names:
                continue
        out += data[key_start:b]
    return bytes(out)
