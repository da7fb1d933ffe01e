"""File helpers every stage shares (standard library only): content hashes, output
paths checked before work starts (never a file of another kind, a special file, an
input or a path inside an input folder), and writes that never leave a half-written
file (a command's outputs replaced together, a symlink's target updated with its
permissions, a full disk or file-size limit said in one line)."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

from iaunet.core import file_kinds
from iaunet.core.errors import IAUnetError


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_output_path(path, inputs=(), kind: str | None = None) -> Path:
    """Refuse, before any work, an output path that is a folder or a special file (FIFO,
    device, socket), whose name is too long, that lies in a folder that does not exist or
    cannot be written, is one of the command's ``inputs`` or inside an input folder, or
    holds a file of another kind than ``kind`` (a checkpoint, a model, a gallery, another
    stage's record: see ``iaunet.core.file_kinds``). A file of the same kind, or one the
    toolkit does not know, is replaced: the user named it. A symlink is followed: its
    target is what gets replaced."""
    path = Path(path)
    check_name_length(path)
    if path.is_dir():
        raise IAUnetError(f"output {path} is a folder; expected a file path")
    target = write_target(path)
    check_parent_folder(target)
    _check_not_input(path, inputs)
    _check_existing(path, kind)
    return path


def write_target(path) -> Path:
    """The file a write to ``path`` replaces: a symlink's target (current.npz -> v1.npz
    updates v1.npz and keeps the link), else ``path`` itself."""
    path = Path(path)
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def check_name_length(path) -> None:
    """The output's name fits the file system (checked before the work, not after it)."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    size = len(os.fsencode(path.name))
    if size > limit:
        raise IAUnetError(f"output name {path.name[:40]}... is {size} bytes long; this file system allows at most "
                          f"{limit}; expected a shorter name")


def _special_kind(mode: int) -> str | None:
    for test, what in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return what
    return None


def _check_existing(path: Path, kind: str | None) -> None:
    try:
        mode = os.stat(path).st_mode  # follows a symlink (/dev/stdout -> /proc/self/fd/1 -> a pipe)
    except OSError:
        return
    special = _special_kind(mode)
    if special:
        raise IAUnetError(f"output {path} is {special}, not a regular file; expected a file path (the toolkit writes "
                          "through a temporary file renamed into place, which would replace it)")
    found = file_kinds.kind_of(path)
    if found is not None and found != kind:
        what = f" with {file_kinds.article(kind)}" if kind else ""
        raise IAUnetError(f"output {path} is {file_kinds.article(found)}; not replacing it{what}: expected a new "
                          "path (or remove that file first)")


def check_distinct_outputs(*paths) -> None:
    """Refuse two outputs of one command on the same file (the second would overwrite the first)."""
    seen = {}
    for path in paths:
        if path is None:
            continue
        key = os.path.realpath(path)
        if key in seen:
            raise IAUnetError(f"outputs {seen[key]} and {path} are the same file; expected different paths")
        seen[key] = path


def _check_not_input(path: Path, inputs) -> None:
    resolved = Path(os.path.realpath(path))
    for source in inputs:
        if source is None:
            continue
        if _same_file(path, Path(source)):
            raise IAUnetError(f"output {path} is the input {source}; expected a different output path")
        if Path(source).is_dir() and resolved.is_relative_to(os.path.realpath(source)):
            raise IAUnetError(f"output {path} is inside the input folder {source}; expected a path outside it")


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


def json_text(payload) -> str:
    return json.dumps(payload, indent=2) + "\n"


def write_json(path, payload) -> None:
    """Write ``payload`` as indented JSON atomically (a temporary file beside ``path``, renamed)."""
    with atomic_output(path) as tmp:
        Path(tmp).write_text(json_text(payload))


OUT_OF_ROOM = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}  # a full disk, a file-size limit, a quota


def out_of_room(exc: BaseException, what) -> IAUnetError | None:
    """One line for a write that ran out of room (naming ``what`` and the OS reason), or None."""
    if isinstance(exc, OSError) and exc.errno in OUT_OF_ROOM:
        return IAUnetError(f"cannot write {what}: {os.strerror(exc.errno)}; nothing was written")
    return None


ROOM_SLACK = 1 << 16  # writers stop within a buffer of the limit


def _ran_out_writing(temps, paths) -> IAUnetError | None:
    """For writers that hide the OS error (torch.save raises a RuntimeError without errno):
    a temporary file that reached the file-size limit, or a file system left with no room,
    is the reason; one line naming the output. None where neither holds."""
    for tmp, path in zip(temps, paths):
        reason = _room_left_reason(tmp)
        if reason:
            return IAUnetError(f"cannot write {path}: {os.strerror(reason)}; nothing was written")
    return None


def _room_left_reason(tmp) -> int | None:
    try:
        import resource
        size, limit = os.path.getsize(tmp), resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit != resource.RLIM_INFINITY and size + ROOM_SLACK >= limit:
            return errno.EFBIG
        fs = os.statvfs(os.path.dirname(tmp) or ".")
        free = fs.f_bfree if os.geteuid() == 0 else fs.f_bavail
        if free * fs.f_frsize < ROOM_SLACK:
            return errno.ENOSPC
    except (ImportError, OSError):
        return None
    return None


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _temporary_beside(target: Path) -> str:
    """An empty hidden file beside ``target``, its name short whatever the target's length."""
    fd, tmp = tempfile.mkstemp(dir=target.parent if str(target.parent) else ".", prefix=f".{target.name[:40]}.",
                               suffix=".tmp")
    os.close(fd)
    return tmp


def _mode_for(target: Path) -> int:
    """The replaced file's permissions (a 0600 gallery stays 0600), else the usual ones."""
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_outputs(*paths):
    """Yield one temporary path beside each of ``paths``; they replace ``paths`` together,
    only if the block finishes without an exception, and are removed in every case
    otherwise (a command's outputs are one unit: all new or all as they were). A symlinked
    path updates its target; a replaced file keeps its permissions. A full disk or a
    file-size limit is one line naming the output."""
    targets = [write_target(p) for p in paths]
    for path, target in zip(paths, targets):
        if os.path.lexists(target) and not os.path.isfile(target):
            raise IAUnetError(f"output {path} exists and is not a regular file; not replacing it")
    temps = []
    try:
        for target in targets:
            temps.append(_temporary_beside(target))
        yield temps
        for target, tmp in zip(targets, temps):
            os.chmod(tmp, _mode_for(target))  # mkstemp makes 0600
        for target, tmp in zip(targets, temps):
            os.replace(tmp, target)
    except Exception as exc:
        named = dict(zip(temps, paths)).get(getattr(exc, "filename", None))
        error = out_of_room(exc, named or " and ".join(map(str, paths))) or _ran_out_writing(temps, paths)
        if error:
            raise error from None
        raise
    finally:
        for tmp in temps:
            if os.path.lexists(tmp):
                os.remove(tmp)


@contextlib.contextmanager
def report_folder(path):
    """Make the report folder ``path`` if it is missing; if the block fails, a folder made
    here is removed again (when still empty): a failed report leaves no trace."""
    path = Path(path)
    made = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    except BaseException:
        if made:
            with contextlib.suppress(OSError):
                path.rmdir()
        raise


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block
    finishes without an exception, and is removed in every case otherwise."""
    with atomic_outputs(path) as (tmp,):
        yield tmp


def check_report_folder(path, inputs=(), files=None) -> Path:
    """Refuse, before any work, a report folder that is a file, is one of the command's
    ``inputs`` (a data folder) or inside one, or cannot be made or written (an existing
    folder is fine: the report's own ``files``, {name: kind}, in it are replaced, unless
    one is a file of another kind)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise IAUnetError(f"report folder {path} is a file; expected a folder")
    _check_not_input(path, inputs)
    if path.is_dir():
        _check_writable(path)
        for name, kind in (files or {}).items():
            check_output_path(path / name, kind=kind)
    else:
        check_parent_folder(path)
    return path


def check_output_folder(path, inputs=()) -> Path:
    """Refuse, before any work, a folder output that exists with content, is a file, lies
    inside one of the ``inputs`` folders, or whose parent does not exist or cannot be written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise IAUnetError(f"output {path} is a file; expected a new or empty folder")
    if path.is_dir() and any(path.iterdir()):
        raise IAUnetError(f"output folder {path} is not empty; expected a new or empty folder")
    _check_not_input(path, inputs)
    check_parent_folder(path)
    return path


@contextlib.contextmanager
def atomic_folder(path):
    """Yield a temporary folder beside ``path``; when the block finishes it becomes ``path``
    (which must be absent or empty); on an error or interrupt it is removed and ``path``
    is left as it was."""
    path = Path(path)
    check_output_folder(path)
    tmp = make_temporary_folder(path)
    try:
        yield tmp
        if path.is_dir():
            if any(path.iterdir()):
                raise IAUnetError(f"output folder {path} was filled by something else while this ran; "
                                  "nothing was written to it")
            path.rmdir()
        os.replace(tmp, path)
    except OSError as exc:
        error = out_of_room(exc, f"{path}/")
        if error:
            raise error from None
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def make_temporary_folder(path: Path, suffix: str = ".tmp") -> Path:
    """A hidden folder beside ``path`` (its name short), with the usual permissions
    (umask), not mkdtemp's 0700: a bundle is read by container users who are not root."""
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name[:40]}.", suffix=suffix))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp
