"""The identity matcher's stores: a local folder (default) and Milvus (a server, a
cluster, or Milvus Lite in a local ``.db`` file), behind ``identities.Store``.

``open_store(spec, dim, model_id)``: ``DIR`` (a folder), ``milvus://HOST:PORT/COLLECTION``
or ``milvus-lite:PATH.db``.

**LocalStore** (numpy): ``DIR/journal.bin`` is append-only. Each ``flush`` appends one
frame (``IAUS``, payload length, CRC-32, payload: a JSON list of rows and their float32
embeddings) and fsyncs it, so a flush is all there or not at all. Opening reads the frames
in order and stops at the first incomplete or corrupt one: a process killed mid-flush loses
that flush and nothing before it, and the writer that opens the store next cuts the broken
tail off. A later row with the same key replaces an earlier one (rows without an
embedding update a row's flags and span). ``DIR/lock`` is held (``flock``) while a writer
has the store open; a second writer is refused in one line (the kernel releases the lock
when a process dies, so a killed writer leaves none behind). The first frame records the
embedding dimension and model id; another model is refused.

**MilvusStore** (``pymilvus``, imported here lazily): one collection, a row per track
(primary key: the track's key; upserted), metric inner product over L2-normalised
embeddings, FLAT index (exact, as the local store). ``MilvusClient`` opens a server by
URI or, given a local ``.db`` path, starts Milvus Lite itself. The camera and time
constraints are Milvus filter expressions: ``conflicts`` is a scalar query (tracks
overlapping the new one in time, per camera with its travel time), ``search`` a vector
search filtered to representatives within the window and outside the clashing
identities. A meta row (key ``__meta__``) holds the model id and the next identity
number. A Milvus server has no writer lock: one process per collection. Milvus Lite
serves a ``.db`` file from the process that opened it (another process cannot open it
meanwhile); ``close`` releases it.
"""
from __future__ import annotations

import fcntl
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from iaunet.core.errors import IAUnetError
from iaunet.core.log import get_logger
from iaunet.runtime.identities import Row, Store, Track

log = get_logger("runtime")
MAGIC = b"IAUS"
HEADER = struct.Struct("<4sII")         # magic, payload bytes, crc32 of the payload
JOURNAL, LOCK = "journal.bin", "lock"
FORMAT = 1
META_KEY = "__meta__"
QUERY_LIMIT = 16384                     # Milvus's cap on one query's offset + limit
MILVUS_PREFIXES = ("milvus://", "milvus-lite:")
FIELDS = ("key", "identity", "camera", "track_id", "first", "last", "first_frame", "last_frame", "rep", "final",
          "seen_first", "seen_last")


def open_store(spec, dim: int, model_id: str = "") -> Store:
    """The store ``spec`` names, opened for writing."""
    spec = str(spec)
    if spec.startswith(MILVUS_PREFIXES):
        return MilvusStore(spec, dim, model_id)
    return LocalStore(spec, dim, model_id)


def describe_store(spec) -> str:
    return str(spec) if str(spec).startswith(MILVUS_PREFIXES) else f"folder {spec}"


# -- local ----------------------------------------------------------------------------------

def read_frames(data: bytes) -> tuple:
    """(payloads of the complete frames, bytes they span): stops at the first broken frame."""
    payloads, offset = [], 0
    while offset + HEADER.size <= len(data):
        magic, size, crc = HEADER.unpack_from(data, offset)
        end = offset + HEADER.size + size
        if magic != MAGIC or end > len(data) or zlib.crc32(data[offset + HEADER.size:end]) != crc:
            break
        payloads.append(data[offset + HEADER.size:end])
        offset = end
    return payloads, offset


def encode_rows(rows: list, meta: dict | None = None) -> bytes:
    """One frame's payload: JSON (meta, rows with an embedding index or -1), then the float32 embeddings."""
    embs, records = [], []
    for r in rows:
        rec = {k: getattr(r, k) for k in FIELDS}
        rec["e"] = -1 if r.embedding is None else len(embs)
        if r.embedding is not None:
            embs.append(np.asarray(r.embedding, np.float32))
        records.append(rec)
    head = json.dumps({"meta": meta, "rows": records}).encode()
    body = np.stack(embs).astype("<f4").tobytes() if embs else b""
    payload = struct.pack("<I", len(head)) + head + body
    return HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def decode_rows(payload: bytes, dim: int | None) -> tuple:
    (n,) = struct.unpack_from("<I", payload)
    head = json.loads(payload[4:4 + n])
    meta = head["meta"]
    dim = meta["dim"] if meta else dim
    embs = np.frombuffer(payload[4 + n:], "<f4").reshape(-1, dim) if dim else np.zeros((0, 0), np.float32)
    return meta, [Row(**{k: rec[k] for k in FIELDS}, embedding=embs[rec["e"]] if rec["e"] >= 0 else None)
                  for rec in head["rows"]]


class LocalStore(Store):
    """Rows in growable numpy columns, a key -> row index, the journal for durability."""

    def __init__(self, folder, dim: int, model_id: str = ""):
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise IAUnetError(f"store {self.folder} is a file; expected a folder (or a path to create one)")
        if not self.folder.parent.is_dir():
            raise IAUnetError(f"store {self.folder}: folder {self.folder.parent} does not exist")
        self.folder.mkdir(exist_ok=True)
        self._lock = self._take_lock()
        self.dim, self.model_id = int(dim), model_id
        self._init_columns()
        self._pending: list = []
        self._journal = None
        try:
            self._load()
            self._journal = open(self.folder / JOURNAL, "ab")
            if self._journal.tell() == 0:
                self._journal.write(encode_rows([], {"format": FORMAT, "dim": self.dim, "model_id": model_id}))
                self._sync()
        except BaseException:
            self.close()
            raise

    def _take_lock(self):
        handle = open(self.folder / LOCK, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise IAUnetError(f"store {self.folder} is open for writing by another process (pid {holder}); "
                              "expected one writer at a time") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        return handle

    def _init_columns(self):
        self.keys: list = []
        self.index: dict = {}
        self.cams: list = []
        self._cam_code: dict = {}
        self.n, cap = 0, 1024
        self.emb = np.zeros((cap, self.dim), np.float32)
        self.num = {k: np.zeros(cap, np.float64) for k in ("first", "last", "seen_first", "seen_last")}
        self.ints = {k: np.zeros(cap, np.int64) for k in ("identity", "track_id", "first_frame", "last_frame",
                                                           "camera")}
        self.flags = {k: np.zeros(cap, bool) for k in ("rep", "final")}
        self.next_id = 1

    def _load(self):
        path = self.folder / JOURNAL
        data = path.read_bytes() if path.exists() else b""
        payloads, good = read_frames(data)
        if data and not data.startswith(MAGIC):
            raise IAUnetError(f"store {self.folder}: {JOURNAL} is not an identity store of format {FORMAT}")
        if good < len(data):
            log.warning("store %s: %d byte(s) of an incomplete flush at the end of %s dropped", self.folder,
                        len(data) - good, JOURNAL)
            with open(path, "r+b") as f:
                f.truncate(good)
                os.fsync(f.fileno())
        for i, payload in enumerate(payloads):
            try:
                meta, rows = decode_rows(payload, self.dim)
            except (struct.error, ValueError, KeyError, TypeError):
                raise IAUnetError(f"store {self.folder}: {JOURNAL} is not an identity store of format {FORMAT}") \
                    from None
            if i == 0:
                self._check_meta(meta)
            self._apply(rows)

    def _check_meta(self, meta):
        if not meta or meta.get("format") != FORMAT:
            raise IAUnetError(f"store {self.folder}: {JOURNAL} is not an identity store of format {FORMAT}")
        if meta["dim"] != self.dim or (meta["model_id"] and self.model_id and meta["model_id"] != self.model_id):
            raise IAUnetError(f"store {self.folder} holds {meta['dim']}-dimensional embeddings of model "
                              f"{meta['model_id'] or '?'}; this run's model is {self.model_id or '?'} ({self.dim}); "
                              "expected the same model (or another --store)")

    # -- rows in memory --------------------------------------------------------------------
    def _grow(self):
        cap = 2 * len(self.emb)
        self.emb = np.concatenate([self.emb, np.zeros_like(self.emb)])[:cap]
        for cols in (self.num, self.ints, self.flags):
            for k, v in cols.items():
                cols[k] = np.concatenate([v, np.zeros_like(v)])

    def _apply(self, rows: list) -> None:
        for r in rows:
            i = self.index.get(r.key)
            if i is None:
                if self.n == len(self.emb):
                    self._grow()
                i, self.n = self.n, self.n + 1
                self.index[r.key] = i
                self.keys.append(r.key)
            if r.embedding is not None:
                self.emb[i] = r.embedding
            code = self._cam_code.setdefault(r.camera, len(self.cams))
            if code == len(self.cams):
                self.cams.append(r.camera)
            self.ints["camera"][i] = code
            for k in ("identity", "track_id", "first_frame", "last_frame"):
                self.ints[k][i] = getattr(r, k)
            for k in self.num:
                self.num[k][i] = getattr(r, k)
            for k in self.flags:
                self.flags[k][i] = getattr(r, k)
            self.next_id = max(self.next_id, int(r.identity) + 1)

    def _row(self, i: int) -> Row:
        return Row(self.keys[i], int(self.ints["identity"][i]), self.cams[self.ints["camera"][i]],
                   int(self.ints["track_id"][i]), float(self.num["first"][i]), float(self.num["last"][i]),
                   int(self.ints["first_frame"][i]), int(self.ints["last_frame"][i]), bool(self.flags["rep"][i]),
                   bool(self.flags["final"][i]), float(self.num["seen_first"][i]), float(self.num["seen_last"][i]),
                   self.emb[i].copy())

    # -- the Store interface ---------------------------------------------------------------
    def get(self, key):
        i = self.index.get(key)
        return None if i is None else self._row(i)

    def rows(self) -> list:
        return [self._row(i) for i in range(self.n)]

    def conflicts(self, track: Track, travel: dict) -> set:
        n = self.n
        margin = np.array([travel.get(c, 0.0) for c in self.cams], np.float64)[self.ints["camera"][:n]] \
            if self.cams else np.zeros(n)
        clash = (self.num["first"][:n] < track.last + margin) & (self.num["last"][:n] > track.first - margin)
        own = self.index.get(track.key)
        if own is not None:
            clash[own] = False
        return set(self.ints["identity"][:n][clash].tolist())

    def search(self, embedding, track: Track, window: float, exclude: set):
        n = self.n
        ok = self.flags["rep"][:n] & (self.num["seen_last"][:n] >= track.first - window) \
            & (self.num["seen_first"][:n] <= track.last + window)
        if exclude:
            ok &= ~np.isin(self.ints["identity"][:n], np.fromiter(exclude, np.int64))
        own = self.index.get(track.key)
        if own is not None:
            ok[own] = False
        if not ok.any():
            return None
        sims = self.emb[:n] @ np.asarray(embedding, np.float32)   # one pass over memory; no copy of the rows
        sims[~ok] = -np.inf
        best = int(np.argmax(sims))
        return int(self.ints["identity"][best]), float(sims[best])

    def representatives(self, identity: int) -> list:
        n = self.n
        rows = [self._row(i) for i in np.flatnonzero((self.ints["identity"][:n] == identity) & self.flags["rep"][:n])]
        return sorted(rows, key=lambda r: (r.first, r.key))   # the order Milvus's store gives them in

    def holds_other(self, identity: int, key: str) -> bool:
        hits = np.flatnonzero(self.ints["identity"][:self.n] == identity)
        return any(self.keys[i] != key for i in hits)

    def put(self, rows: list) -> None:
        out = []
        for r in rows:
            i = self.index.get(r.key)
            same = i is not None and r.embedding is not None and np.array_equal(self.emb[i], r.embedding)
            out.append(Row(**{k: getattr(r, k) for k in FIELDS}, embedding=None if same else r.embedding))
        self._apply(out)
        self._pending += out

    def new_identity(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def flush(self) -> None:
        if self._pending and self._journal is not None:
            self._journal.write(encode_rows(self._pending))
            self._sync()
            self._pending = []

    def _sync(self):
        self._journal.flush()
        os.fsync(self._journal.fileno())

    def close(self) -> None:
        try:
            self.flush()
        finally:
            if self._journal is not None:
                self._journal.close()
                self._journal = None
            if self._lock is not None:
                fcntl.flock(self._lock, fcntl.LOCK_UN)
                self._lock.close()
                self._lock = None


# -- Milvus ---------------------------------------------------------------------------------

def parse_milvus(spec: str) -> tuple:
    """(uri for MilvusClient, collection name) from ``milvus://HOST:PORT/COLLECTION`` or ``milvus-lite:PATH.db``."""
    expected = "expected milvus://HOST:PORT/COLLECTION or milvus-lite:PATH.db"
    if spec.startswith("milvus-lite:"):
        path = Path(spec[len("milvus-lite:"):])
        if path.suffix != ".db" or not path.name[:-3]:
            raise IAUnetError(f"store {spec}: Milvus Lite needs a file ending in .db; {expected}")
        if not path.parent.is_dir() and str(path.parent):
            raise IAUnetError(f"store {spec}: folder {path.parent} does not exist")
        return str(path.resolve()), "iaunet_identities"
    rest = spec[len("milvus://"):]
    host, _, collection = rest.partition("/")
    if not host or ":" not in host or not collection or not collection.replace("_", "a").isalnum() \
            or not collection[0].isalpha():
        raise IAUnetError(f"store {spec}: {expected} (a collection name of letters, digits and _, starting with a "
                          "letter)")
    return f"http://{host}", collection


def _num(x: float) -> str:
    return repr(float(x))


def _quote(s: str) -> str:
    return json.dumps(str(s))


class MilvusStore(Store):
    """The same rows in a Milvus collection; constraints as Milvus filter expressions."""

    def __init__(self, spec: str, dim: int, model_id: str = ""):
        uri, self.collection = parse_milvus(spec)
        self.lite_path = uri if spec.startswith("milvus-lite:") else None
        try:
            from pymilvus import DataType, MilvusClient
        except ImportError:
            raise IAUnetError(f"store {spec} needs pymilvus (and milvus-lite for a .db file): "
                              "pip install -e '.[milvus]'") from None
        self.dim, self.model_id, self.spec = int(dim), model_id, spec
        try:
            self.client = MilvusClient(uri)
        except Exception as exc:  # noqa: BLE001  (pymilvus raises its own and connection errors)
            raise IAUnetError(f"store {spec}: cannot connect ({exc}); expected a running Milvus (or a .db path "
                              "for Milvus Lite)") from None
        if not self.client.has_collection(self.collection):
            self._create(DataType)
        else:
            self.client.load_collection(self.collection)   # a collection reopened may be released
        self._load_meta()

    def _create(self, DataType):
        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=512)
        for name in ("identity", "track_id", "first_frame", "last_frame"):
            schema.add_field(name, DataType.INT64)
        schema.add_field("camera", DataType.VARCHAR, max_length=512)
        for name in ("first", "last", "seen_first", "seen_last"):
            schema.add_field(name, DataType.DOUBLE)
        schema.add_field("rep", DataType.BOOL)
        schema.add_field("final", DataType.BOOL)
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=self.dim)
        index = self.client.prepare_index_params()
        index.add_index(field_name="embedding", index_type="FLAT", metric_type="IP")
        self.client.create_collection(self.collection, schema=schema, index_params=index,
                                      consistency_level="Strong")
        self._write_meta(1)

    def _meta_row(self, next_id: int) -> dict:
        return {"key": META_KEY, "identity": next_id, "track_id": 0, "first_frame": 0, "last_frame": 0,
                "camera": self.model_id, "first": 1e300, "last": -1e300, "seen_first": 1e300, "seen_last": -1e300,
                "rep": False, "final": True, "embedding": [0.0] * self.dim}

    def _write_meta(self, next_id: int):
        self.client.upsert(self.collection, [self._meta_row(next_id)])
        self.next_id = next_id

    def _load_meta(self):
        info = self.client.describe_collection(self.collection)
        dims = [f.get("params", {}).get("dim") for f in info["fields"] if f["name"] == "embedding"]
        meta = self.client.get(self.collection, ids=[META_KEY], output_fields=["identity", "camera"])
        if not dims or int(dims[0]) != self.dim or not meta:
            raise IAUnetError(f"store {self.spec}: collection {self.collection} is not an identity store of "
                              f"{self.dim}-dimensional embeddings; expected the same model (or another collection)")
        stored = meta[0]["camera"]
        if stored and self.model_id and stored != self.model_id:
            raise IAUnetError(f"store {self.spec} holds embeddings of model {stored}; this run's model is "
                              f"{self.model_id}; expected the same model (or another collection)")
        self.next_id = int(meta[0]["identity"])

    def _rows(self, records) -> list:
        return [Row(**{k: r[k] for k in FIELDS},
                    embedding=np.asarray(r["embedding"], np.float32) if "embedding" in r else None)
                for r in records]

    def get(self, key):
        found = self.client.get(self.collection, ids=[key], output_fields=list(FIELDS) + ["embedding"])
        return self._rows(found)[0] if found and key != META_KEY else None

    def conflicts(self, track: Track, travel: dict) -> set:
        clauses, plain = [], [c for c, t in travel.items() if t == 0]
        for camera, seconds in travel.items():
            if seconds:
                clauses.append(f"(camera == {_quote(camera)} and first < {_num(track.last + seconds)} and "
                               f"last > {_num(track.first - seconds)})")
        clauses.append(f"(camera not in [{', '.join(_quote(c) for c in travel if travel[c])}] and "
                       f"first < {_num(track.last)} and last > {_num(track.first)})" if len(plain) < len(travel)
                       else f"(first < {_num(track.last)} and last > {_num(track.first)})")
        expr = f"key != {_quote(track.key)} and ({' or '.join(clauses)})"
        found = self.client.query(self.collection, filter=expr, output_fields=["identity"], limit=QUERY_LIMIT)
        pages = [found] if len(found) < QUERY_LIMIT else self._query_pages(expr, ["identity"])
        return {int(r["identity"]) for page in pages for r in page}

    def _query_pages(self, expr: str, fields: list, page: int = QUERY_LIMIT):
        """A filtered scalar query, read page by page (Milvus caps one query's rows)."""
        iterator = self.client.query_iterator(self.collection, filter=expr, output_fields=fields, batch_size=page)
        try:
            while batch := iterator.next():
                yield batch
        finally:
            iterator.close()

    def search(self, embedding, track: Track, window: float, exclude: set):
        expr = (f"rep == true and key != {_quote(track.key)} and seen_last >= {_num(track.first - window)} and "
                f"seen_first <= {_num(track.last + window)}")
        if exclude:
            expr += f" and identity not in [{', '.join(str(int(i)) for i in sorted(exclude))}]"
        hits = self.client.search(self.collection, data=[np.asarray(embedding, np.float32).tolist()], filter=expr,
                                  limit=1, output_fields=["identity"], search_params={"metric_type": "IP"})
        if not hits or not hits[0]:
            return None
        best = hits[0][0]
        return int(best["entity"]["identity"]), float(best["distance"])

    def representatives(self, identity: int) -> list:
        found = self.client.query(self.collection, filter=f"identity == {int(identity)} and rep == true",
                                  output_fields=list(FIELDS) + ["embedding"], limit=QUERY_LIMIT)
        return sorted(self._rows(found), key=lambda r: (r.first, r.key))

    def holds_other(self, identity: int, key: str) -> bool:
        return bool(self.client.query(self.collection, filter=f"identity == {int(identity)} and key != {_quote(key)}",
                                      output_fields=["key"], limit=1))

    def put(self, rows: list) -> None:
        self.client.upsert(self.collection, [
            {k: getattr(r, k) for k in FIELDS} | {"embedding": np.asarray(r.embedding, np.float32).tolist()}
            for r in rows])

    def new_identity(self) -> int:
        identity = self.next_id
        self._write_meta(identity + 1)
        return identity

    def rows(self) -> list:
        out = []
        for page in self._query_pages(f"key != {_quote(META_KEY)}", list(FIELDS)):
            out += self._rows(page)
        return out

    def flush(self) -> None:
        pass   # every upsert is acknowledged by Milvus (strong consistency)

    def close(self) -> None:
        if getattr(self, "client", None) is not None:
            self.client.close()
            self.client = None
            if self.lite_path:   # Milvus Lite serves the .db from this process: let another process open it
                from milvus_lite.server_manager import server_manager_instance
                server_manager_instance.release_server(self.lite_path)
