"""Download public datasets into a cache, verify their published checksums and extract them safely.

``fetch_dataset("Task04_Hippocampus")`` downloads the task's archive over HTTPS,
checks its MD5 sum against the published one, and extracts it into
``<cache>/Task04_Hippocampus``. The archive is extracted into a temporary folder
that is renamed once complete, so a folder under its final name is always whole.
Members with absolute paths, ``..`` components, links that lead outside the target
folder, and device or FIFO files are rejected before anything is written for them.
"""

from __future__ import annotations

import difflib
import hashlib
import http.client
import logging
import os
import shutil
import stat
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from ..errors import FetchError
from .msd import DATA_ROOT_VARIABLE

logger = logging.getLogger(__name__)

CACHE_VARIABLE = DATA_ROOT_VARIABLE
CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60.0
# Hosts where plain HTTP is accepted: the loopback servers of tests.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class Archive:
    """A public dataset archive: the folder it extracts to, its file name under the base URL, and its MD5 sum."""

    name: str
    filename: str
    md5: str


# The Medical Segmentation Decathlon tasks as mirrored by the MONAI project, with the
# MD5 sums it publishes: DecathlonDataset.resource and DecathlonDataset.md5 in
# monai/apps/datasets.py of Project-MONAI/MONAI (read at commit a3235efc).
DECATHLON_BASE_URL = "https://msd-for-monai.s3-us-west-2.amazonaws.com"
DECATHLON: dict[str, Archive] = {
    archive.name: archive
    for archive in (
        Archive("Task01_BrainTumour", "Task01_BrainTumour.tar", "240a19d752f0d9e9101544901065d872"),
        Archive("Task02_Heart", "Task02_Heart.tar", "06ee59366e1e5124267b774dbd654057"),
        Archive("Task03_Liver", "Task03_Liver.tar", "a90ec6c4aa7f6a3d087205e23d4e6397"),
        Archive("Task04_Hippocampus", "Task04_Hippocampus.tar", "9d24dba78a72977dbd1d2e110310f31b"),
        Archive("Task05_Prostate", "Task05_Prostate.tar", "35138f08b1efaef89d7424d2bcc928db"),
        Archive("Task06_Lung", "Task06_Lung.tar", "8afd997733c7fc0432f71255ba4e52dc"),
        Archive("Task07_Pancreas", "Task07_Pancreas.tar", "4f7080cfca169fa8066d17ce6eb061e4"),
        Archive("Task08_HepaticVessel", "Task08_HepaticVessel.tar", "641d79e80ec66453921d997fbf12a29c"),
        Archive("Task09_Spleen", "Task09_Spleen.tar", "410d4a301da4e5b2f6f86ec3ddba524e"),
        Archive("Task10_Colon", "Task10_Colon.tar", "bad7a188931dc2f6acf72b08eb6202d0"),
    )
}

Progress = Callable[[int, int | None], None]
"""Called with (bytes received so far, total bytes or ``None`` when the server sends no Content-Length)."""


def default_cache() -> Path:
    """``$MEDAUG_DATA`` when set, so fetched datasets land where studies look; else ``~/.cache/medaug``."""
    if os.environ.get(CACHE_VARIABLE):
        return Path(os.environ[CACHE_VARIABLE]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "medaug"


def find_archive(name: str) -> Archive:
    """Look up a Decathlon task by folder name (``Task04_Hippocampus``), prefix (``Task04``) or organ (``hippocampus``).

    Raises:
        FetchError: when no task matches, with the closest names.
    """
    requested = name.strip().lower()
    for archive in DECATHLON.values():
        number, organ = archive.name.lower().split("_", 1)
        if requested in (archive.name.lower(), number, organ):
            return archive
    close = difflib.get_close_matches(name, list(DECATHLON), n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise FetchError(f"unknown dataset {name!r}; {hint}known datasets: {', '.join(DECATHLON)}")


def fetch_dataset(name: str, cache: str | Path | None = None, *, progress: Progress | None = None) -> Path:
    """Download and extract the Decathlon task ``name`` into ``cache`` unless it is there already.

    Args:
        name: task folder name, ``TaskNN`` prefix or organ name, see ``find_archive``.
        cache: folder that receives ``<task folder>/``; default ``default_cache()``.
        progress: optional download progress callback.

    Returns:
        The dataset folder, which contains ``dataset.json``.
    """
    archive = find_archive(name)
    return fetch_archive(archive, Path(cache) if cache is not None else default_cache(), base_url=DECATHLON_BASE_URL, progress=progress)


def fetch_archive(archive: Archive, cache: Path, *, base_url: str, progress: Progress | None = None) -> Path:
    """Download ``archive`` from ``base_url``, verify its MD5 sum and extract it into ``cache / archive.name``.

    ``base_url`` must use HTTPS; plain HTTP is accepted only for loopback hosts,
    which tests use. The download is deleted after extraction, and also when its
    checksum does not match.

    Raises:
        FetchError: when the download fails or is incomplete, the checksum does not
            match, or the archive contains an unsafe member or not the expected folder.
    """
    cache = Path(cache).expanduser()
    target = cache / archive.name
    if (target / "dataset.json").is_file():
        logger.info("%s is already in %s; nothing to download", archive.name, cache)
        return target
    if target.exists():
        raise FetchError(f"{target} exists but has no dataset.json; move or delete it, then fetch again")
    if cache.exists() and not cache.is_dir():
        raise FetchError(f"cache {cache} is a file; pass --cache DIR with a folder")

    url = f"{base_url.rstrip('/')}/{archive.filename}"
    _check_url(url)
    cache.mkdir(parents=True, exist_ok=True)
    download = _download(url, cache, archive, progress)
    try:
        _extract(download, cache, archive)
    finally:
        download.unlink(missing_ok=True)
    logger.info("extracted %s into %s", archive.filename, target)
    return target


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS):
        return
    raise FetchError(f"invalid download URL {url}: only HTTPS URLs are allowed")


def _download(url: str, cache: Path, archive: Archive, progress: Progress | None) -> Path:
    """Stream ``url`` into a temporary file in ``cache`` while computing its MD5; return the verified file."""
    descriptor, name = tempfile.mkstemp(prefix=f".{archive.filename}.", suffix=".part", dir=cache)
    partial = Path(name)
    digest = hashlib.md5(usedforsecurity=False)  # the published sums are MD5
    received = 0
    try:
        with os.fdopen(descriptor, "wb") as handle, urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            total = _content_length(response)
            if total is not None:
                _check_free_space(cache, total, url)
            logger.info("downloading %s (%s)", url, f"{total / 2**20:.0f} MiB" if total is not None else "size unknown")
            while chunk := response.read(CHUNK_BYTES):
                handle.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                if progress is not None:
                    progress(received, total)
            handle.flush()
            os.fsync(handle.fileno())
        if total is not None and received != total:
            raise FetchError(f"download of {url} stopped after {received} of {total} bytes; the partial file was deleted, fetch again")
    except urllib.error.HTTPError as error:
        partial.unlink(missing_ok=True)
        raise FetchError(f"cannot download {url}: HTTP {error.code} {error.reason}; the server does not offer the file there, so the archive may have moved") from error
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        partial.unlink(missing_ok=True)
        reason = getattr(error, "reason", error)
        raise FetchError(f"cannot download {url}: {reason}; check the network connection and fetch again") from error
    except BaseException:
        partial.unlink(missing_ok=True)
        raise

    actual = digest.hexdigest()
    if actual != archive.md5:
        partial.unlink(missing_ok=True)
        raise FetchError(
            f"checksum mismatch for {url}: MD5 {actual}, expected {archive.md5}; the download was deleted. "
            "Fetch again, and if it fails the same way the file on the server has changed"
        )
    return partial


def _content_length(response) -> int | None:
    value = response.headers.get("Content-Length")
    return int(value) if value is not None and value.isdigit() else None


def _check_free_space(cache: Path, size: int, url: str) -> None:
    # The archive and its extracted files exist side by side until the archive is deleted.
    needed = 2 * size
    free = shutil.disk_usage(cache).free
    if free < needed:
        raise FetchError(f"not enough disk space in {cache} for {url}: needs about {needed / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free; pass --cache DIR on a larger disk")


def _extract(download: Path, cache: Path, archive: Archive) -> None:
    """Extract ``download`` into a temporary folder in ``cache``, then move its dataset folder to ``cache / archive.name``."""
    staging = Path(tempfile.mkdtemp(prefix=f".{archive.name}.", suffix=".extracting", dir=cache))
    try:
        try:
            with tarfile.open(download, mode="r:*") as tar:
                for member in tar:
                    _extract_member(tar, member, staging, archive)
        except (tarfile.TarError, EOFError, OSError) as error:
            raise FetchError(f"cannot extract {archive.filename} ({type(error).__name__}: {error}); the archive is corrupt, fetch again") from error

        extracted = staging / archive.name
        if not (extracted / "dataset.json").is_file():
            found = sorted(path.name for path in staging.iterdir())[:5]
            raise FetchError(f"{archive.filename} does not contain {archive.name}/dataset.json (top-level entries: {found}); it is not the expected dataset")
        try:
            os.replace(extracted, cache / archive.name)
        except OSError as error:
            if (cache / archive.name / "dataset.json").is_file():
                logger.info("another process extracted %s into %s first; keeping that copy", archive.name, cache)
                return
            raise FetchError(f"cannot move the extracted dataset to {cache / archive.name}: {error}; free or delete that path and fetch again") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, root: Path, archive: Archive) -> None:
    """Check one member against ``root``, then extract it; unsafe members raise ``FetchError``."""
    name = PurePosixPath(member.name)
    if name.name.startswith("._"):
        # macOS AppleDouble metadata, which archives made with macOS tar can contain; not data.
        logger.debug("skipping macOS metadata file %s", member.name)
        return

    unsafe = _unsafe_reason(member, root)
    if unsafe:
        raise FetchError(f"{archive.filename} is unsafe to extract: member {member.name!r} {unsafe}; nothing was extracted into the cache")
    if hasattr(tarfile, "data_filter"):
        # Second line of defence (Python 3.10.12+, 3.11.4+): also strips set-user-ID bits and
        # re-checks each path on the file system while it extracts.
        try:
            tar.extract(member, root, filter="data")
        except tarfile.FilterError as error:
            raise FetchError(f"{archive.filename} is unsafe to extract: member {member.name!r}: {error}; nothing was extracted into the cache") from error
    else:
        tar.extract(member, root)


def _unsafe_reason(member: tarfile.TarInfo, root: Path) -> str | None:
    """Why extracting ``member`` under ``root`` would be unsafe, or ``None``.

    Paths are resolved on the file system, so links extracted from earlier
    members are followed as they would be while writing this one.
    """
    name = PurePosixPath(member.name)
    if name.is_absolute() or member.name.startswith(("/", "\\")) or (len(member.name) > 1 and member.name[1] == ":"):
        return "has an absolute path"
    if ".." in name.parts or "\\" in member.name:
        return "contains '..' or a backslash"
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        kind = {tarfile.CHRTYPE: "a character device", tarfile.BLKTYPE: "a block device", tarfile.FIFOTYPE: "a FIFO"}.get(member.type, f"of tar type {member.type!r}")
        return f"is {kind}, not a file, folder or link"
    if member.mode & (stat.S_ISUID | stat.S_ISGID):
        return "has the set-user-ID or set-group-ID bit"

    resolved_root = root.resolve()
    destination = root / name
    if not destination.parent.resolve().is_relative_to(resolved_root):
        return "lies under a link that leads outside the target folder"
    if member.issym():
        link = PurePosixPath(member.linkname)
        if link.is_absolute() or not (destination.parent / link).resolve().is_relative_to(resolved_root):
            return f"is a symbolic link to {member.linkname!r}, outside the target folder"
    if member.islnk():
        link = PurePosixPath(member.linkname)
        if link.is_absolute() or ".." in link.parts or not (root / link).resolve().is_relative_to(resolved_root):
            return f"is a hard link to {member.linkname!r}, outside the target folder"
    return None
