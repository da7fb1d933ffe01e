"""File helpers every stage shares (standard library only): content hashes, output
paths checked before work starts, and writes that never leave a half-written file."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from iaunet.core.errors import IAUnetError


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_output_path(path, inputs=()) -> Path:
    """Refuse, before any work, an output path that is a folder, lies in a folder that does
    not exist or cannot be written, or is one of the command's ``inputs``."""
    path = Path(path)
    if path.is_dir():
        raise IAUnetError(f"output {path} is a folder; expected a file path")
    check_parent_folder(path)
    _check_not_input(path, inputs)
    return path


def _check_not_input(path: Path, inputs) -> None:
    for source in inputs:
        if source is not None and _same_file(path, Path(source)):
            raise IAUnetError(f"output {path} is the input {source}; expected a different output path")


def check_parent_folder(path) -> None:
    """The folder an output goes into exists, is a folder and can be written."""
    path = Path(path)
    parent = path.parent
    if parent.exists() and not parent.is_dir():
        raise IAUnetError(f"output {path}: {parent} is a file, not a folder")
    if not parent.is_dir():
        raise IAUnetError(f"output folder {parent} does not exist")
    _check_writable(parent)


def _check_writable(folder: Path) -> None:
    """Make and remove a temporary folder there: os.access says yes to root even under
    /proc, where nothing can be created."""
    try:
        os.rmdir(tempfile.mkdtemp(dir=folder, prefix=".iaunet-probe-"))
    except OSError as exc:
        raise IAUnetError(f"output folder {folder} is not writable ({exc.strerror})") from None


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)  # unlike Path.resolve, no error on a symlink loop


def cache_folder(kind: str, override=None) -> Path:
    """Where ``kind`` results are cached: ``override`` when given, else
    ``$XDG_CACHE_HOME/iaunet/<kind>`` (``~/.cache/iaunet/<kind>``). A path that exists
    and is not a folder is refused."""
    if override:
        path = Path(override)
    else:
        root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        path = Path(root) / "iaunet" / kind
    if path.exists() and not path.is_dir():
        raise IAUnetError(f"cache folder {path} is a file; expected a folder (or a path that does not exist yet)")
    return path


def write_json(path, payload) -> None:
    """Write ``payload`` as indented JSON atomically (a temporary file beside ``path``, renamed)."""
    with atomic_output(path) as tmp:
        Path(tmp).write_text(json.dumps(payload, indent=2) + "\n")


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block
    finishes without an exception, and is removed in every case otherwise."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def check_report_folder(path, inputs=()) -> Path:
    """Refuse, before any work, a report folder that is a file, is one of the command's
    ``inputs`` (a data folder), or cannot be made or written (an existing folder is fine:
    the report's own files in it are replaced)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise IAUnetError(f"report folder {path} is a file; expected a folder")
    _check_not_input(path, inputs)
    if path.is_dir():
        _check_writable(path)
    else:
        check_parent_folder(path)
    return path


def check_output_folder(path) -> Path:
    """Refuse, before any work, a folder output that exists with content, is a file, or
    whose parent does not exist or cannot be written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise IAUnetError(f"output {path} is a file; expected a new or empty folder")
    if path.is_dir() and any(path.iterdir()):
        raise IAUnetError(f"output folder {path} is not empty; expected a new or empty folder")
    check_parent_folder(path)
    return path


@contextlib.contextmanager
def atomic_folder(path):
    """Yield a temporary folder beside ``path``; when the block finishes it becomes ``path``
    (which must be absent or empty); on an error or interrupt it is removed and ``path``
    is left as it was."""
    path = Path(path)
    check_output_folder(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        if path.is_dir():
            if any(path.iterdir()):
                raise IAUnetError(f"output folder {path} was filled by something else while this ran; "
                                  "nothing was written to it")
            path.rmdir()
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
