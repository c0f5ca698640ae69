"""Writing a file atomically: the one helper for the data cache, the results store and the
report (the lowest floor all three import); and where the cache is (`default_cache_dir`).

A file is written under a temporary name beside it, `.<name>.<pid>.<random>.tmp`, and
renamed into place, so a reader (or a process killed mid-write) never sees half a file
under the real name. The temporary file gets the mode a new file would (`file_mode`:
0666 less the umask), so every file a command writes has the same mode. A temporary
name says which process wrote it: `orphaned` tells the files of a writer that is gone
(the report's figure folder removes them).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

TEMP_SUFFIX = ".tmp"


def file_mode() -> int:
    """0666 less the umask: what `open` gives a new file. `mkstemp` creates its files
    0600 whatever the umask, which left experiment.toml, meta.json, run.json and DONE
    unreadable to a group that could read the Parquet files beside them."""
    try:  # Linux >= 4.7 shows the umask without changing it (os.umask sets it, process-wide)
        with open("/proc/self/status") as f:
            umask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: Path | str):
    """`with atomic_path(p) as tmp:` write the file `tmp` (it exists, empty, with
    `file_mode()`); at the end of the block it is renamed to `p`, or removed if the block
    raised."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=TEMP_SUFFIX, dir=path.parent)
    tmp = Path(name)
    try:
        os.fchmod(fd, file_mode())
        os.close(fd)
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def default_cache_dir() -> Path:
    """`$VGLAB_CACHE`, else `~/.cache/vglab`: downloads, the PCA and digits caches, saved
    arrays and JAX's compilation cache live here (files vglab can make again)."""
    env = os.environ.get("VGLAB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vglab"


def save_npz(path: Path, what: str, **arrays) -> None:
    """Write a cache file (.npz) atomically, so a crash or a concurrent run never leaves a
    half-written file under the real name. A cache that cannot be written costs time, not
    correctness: `what` names it in the warning."""
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
    except OSError as e:
        warnings.warn(f"cannot write the {what} cache in {path.parent} ({e})", stacklevel=3)


def write_via(path: Path | str, write) -> None:
    """Let `write(tmp_path)` produce the file (pyarrow, numpy, matplotlib), then rename it into place."""
    with atomic_path(path) as tmp:
        write(tmp)


def write_bytes(path: Path | str, data: bytes) -> None:
    """`data` as the file `path`, on the disk before it has the name (DONE marks a state)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_text(path: Path | str, text: str) -> None:
    write_bytes(path, text.encode())


def pid_alive(pid: int) -> bool:
    """Whether a process `pid` exists (the writer of a temporary file, the holder of a lock)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def orphaned(p: Path) -> bool:
    """Whether `p` is a temporary file of `atomic_path` whose writer is gone."""
    if not (p.name.startswith(".") and p.name.endswith(TEMP_SUFFIX)):
        return False
    parts = p.name[:-len(TEMP_SUFFIX)].rsplit(".", 2)
    return len(parts) == 3 and parts[1].isdigit() and not pid_alive(int(parts[1]))
