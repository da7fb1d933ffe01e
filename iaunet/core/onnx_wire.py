"""Just enough of the protobuf wire format to read an ONNX file's metadata and plugin
nodes and to drop its local functions, without the onnx package: a Jetson builds engines
with tensorrt, pycuda, numpy, Pillow and polygraphy only.

Field numbers are onnx.proto's: ModelProto graph 7, metadata_props 14, functions 25;
GraphProto node 1; NodeProto op_type 4, domain 7; FunctionProto name 1, domain 10;
StringStringEntryProto key 1, value 2. Tests compare every answer with the onnx package's.
"""
from __future__ import annotations

from iaunet.core.errors import IAUnetError

MODEL_GRAPH, MODEL_METADATA, MODEL_FUNCTIONS = 7, 14, 25
GRAPH_NODE = 1
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
