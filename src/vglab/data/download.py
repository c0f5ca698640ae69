"""Checksum-verified downloads and safe archive extraction.

Nothing here ever leaves a partial file where a later run would trust it: bytes stream
into a hidden temporary file next to the destination and are renamed into place only
after the checksum matches; archives are unpacked, member by member after every member
was checked, into a temporary folder that the caller renames into place.

Checksums are written "algo:hexdigest" (e.g. "md5:6bbc...") so the published MD5s and
our own SHA-256s can live side by side.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import shutil
import tarfile
import urllib.request
import zlib
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from .errors import DataError
from .files import atomic_path

CHUNK = 1 << 20
TIMEOUT = 60.0  # seconds a mirror may stay silent before we try the next one
USER_AGENT = "vglab/0.1 (python-urllib)"  # some hosts refuse urllib's default agent


# ----------------------------------------------------------------------------- checksums


def checksum(data: bytes | Path, algo: str, gunzip: bool = False) -> str:
    """Hex digest of `data` (bytes, or a file streamed from disk; `gunzip`: of its
    decompressed content, which is what the published MNIST checksums cover)."""
    h = hashlib.new(algo)
    if isinstance(data, bytes):
        h.update(data)
        return h.hexdigest()
    try:
        with gzip.open(data, "rb") if gunzip else open(data, "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise DataError(f"{data}: not a complete gzip file ({e})") from e
    return h.hexdigest()


def verify(data: bytes | Path, expected: str, gunzip: bool = False) -> str | None:
    """None if `data` matches `expected` ("algo:hex"), else a sentence saying how not."""
    algo, _, want = expected.partition(":")
    got = checksum(data, algo, gunzip)
    return None if got == want.lower() else f"{algo} is {got}, expected {want}"


# ----------------------------------------------------------------------------- downloads


def progress_bar(quiet: bool = False) -> Progress:
    """A rich progress bar on stderr (stdout stays clean for the CLI); `quiet` hides it."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=quiet,
    )


def download(
    urls: Sequence[str],
    dest: Path,
    expected: str,
    *,
    gunzip: bool = False,
    progress: Progress | None = None,
    timeout: float = TIMEOUT,
) -> Path:
    """Download the first of `urls` that works to `dest`, verified against `expected`.

    Mirrors are tried in order; one that fails (network error, interrupted transfer,
    wrong checksum) is skipped. Raises DataError listing every failure if none works.
    """
    failures = []
    for url in urls:
        try:
            _download_one(url, Path(dest), expected, gunzip, progress, timeout)
            return Path(dest)
        except DataError as e:
            failures.append(f"{url}: {e}")
    raise DataError(f"could not download {Path(dest).name}:\n  " + "\n  ".join(failures))


def _download_one(url, dest, expected, gunzip, progress, timeout) -> None:
    with atomic_path(dest) as tmp:
        total, received = None, 0
        with open(tmp, "wb") as out:
            try:
                request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    length = response.headers.get("Content-Length", "")
                    total = int(length) if length.isdigit() else None
                    task = progress.add_task(dest.name, total=total) if progress else None
                    while chunk := response.read(CHUNK):
                        out.write(chunk)
                        received += len(chunk)
                        if progress:
                            progress.advance(task, len(chunk))
            # URLError, timeouts and resets are OSErrors; IncompleteRead is an HTTPException.
            except (OSError, http.client.HTTPException) as e:
                raise DataError(f"download failed ({e})") from e
        # http.client quietly returns b"" when the server hangs up early: count ourselves.
        if total is not None and received != total:
            raise DataError(f"transfer interrupted after {received} of {total} bytes")
        if problem := verify(tmp, expected, gunzip):
            raise DataError(f"checksum mismatch: {problem}")


# ----------------------------------------------------------------------------- archives


def extract_tar(archive: Path, into: Path) -> None:
    """Unpack `archive` (any tar compression) into the folder `into`.

    Every member is checked before anything is written: absolute paths, `..`, links and
    devices are refused (a tar can otherwise write anywhere on disk). Only regular files
    and folders are created. Extract into a temporary folder and rename the result.
    """
    archive, into = Path(archive), Path(into)
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(archive, member)
            into.mkdir(parents=True, exist_ok=True)
            for member in members:
                target = into.joinpath(*PurePosixPath(member.name).parts)
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DataError(f"could not unpack {archive.name} ({e})") from e


def _check_member(archive: Path, member: tarfile.TarInfo) -> None:
    path = PurePosixPath(member.name)
    if path.is_absolute() or member.name.startswith("\\") or ":" in member.name or ".." in path.parts:
        raise DataError(f"{archive.name}: refusing unsafe member path {member.name!r}")
    if not (member.isfile() or member.isdir()):
        kind = "link" if member.issym() or member.islnk() else "device or special file"
        raise DataError(f"{archive.name}: refusing member {member.name!r} ({kind}); "
                        "only regular files and folders are extracted")
