"""``medaug data fetch``: downloads from a loopback HTTP server, checksums, and rejection of malicious archives."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from segment.data import MSDDataset
from segment.data.fetch import Archive, fetch_archive, find_archive
from segment.errors import FetchError
from tests.conftest import make_msd_dataset


class QuietHandler(SimpleHTTPRequestHandler):
    """Serves files of one folder, counts requests, and keeps the test output clean."""

    requests: list[str] = []

    def log_message(self, format, *args) -> None:
        pass

    def do_GET(self) -> None:
        QuietHandler.requests.append(self.path)
        if self.path.endswith("truncated.tar"):
            # Announce more bytes than are sent, then close: a connection dropped mid-download.
            body = (Path(self.directory) / "good.tar").read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTP server on 127.0.0.1 serving ``tmp_path / "served"``; yields its base URL and that folder."""
    served = tmp_path / "served"
    served.mkdir()
    QuietHandler.requests = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", served
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def build_archive(path: Path, dataset: Path, extra: list[tarfile.TarInfo] = (), extra_data: dict[str, bytes] | None = None) -> Archive:
    """Write ``dataset`` as a tar of one top folder, followed by the ``extra`` members; return its ``Archive``."""
    extra_data = extra_data or {}
    with tarfile.open(path, "w") as tar:
        tar.add(dataset, arcname=dataset.name)
        for member in extra:
            data = extra_data.get(member.name)
            if data is not None:
                member.size = len(data)
            tar.addfile(member, io.BytesIO(data) if data is not None else None)
    return Archive(dataset.name, path.name, md5(path))


def member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = 0o644
    return info


def files_under(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*")) if folder.exists() else []


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return make_msd_dataset(tmp_path / "source" / "Synthetic", n_cases=2, shape=(6, 6, 4))


def test_good_archive_extracts_and_loads(server, dataset, tmp_path):
    base_url, served = server
    archive = build_archive(served / "good.tar", dataset)
    cache = tmp_path / "cache"

    folder = fetch_archive(archive, cache, base_url=base_url)

    assert folder == cache / "Synthetic"
    assert [case.case_id for case in MSDDataset(folder).cases] == ["case_000", "case_001"]
    assert MSDDataset(folder).load("case_001").image.shape == (1, 6, 6, 4)
    # Only the dataset folder remains: no partial download, no staging folder.
    assert sorted(path.name for path in cache.iterdir()) == ["Synthetic"]


def test_second_fetch_downloads_nothing(server, dataset, tmp_path):
    base_url, served = server
    archive = build_archive(served / "good.tar", dataset)
    fetch_archive(archive, tmp_path / "cache", base_url=base_url)

    again = fetch_archive(archive, tmp_path / "cache", base_url=base_url)

    assert again == tmp_path / "cache" / "Synthetic"
    assert QuietHandler.requests == ["/good.tar"]


def test_checksum_mismatch_deletes_download(server, dataset, tmp_path):
    base_url, served = server
    archive = build_archive(served / "good.tar", dataset)
    tampered = Archive(archive.name, archive.filename, "0" * 32)
    cache = tmp_path / "cache"

    with pytest.raises(FetchError) as raised:
        fetch_archive(tampered, cache, base_url=base_url)

    message = str(raised.value)
    assert "checksum mismatch" in message
    assert f"{base_url}/good.tar" in message
    assert archive.md5 in message
    assert "0" * 32 in message
    assert "the download was deleted" in message
    assert files_under(cache) == []


def test_truncated_download_is_deleted(server, dataset, tmp_path):
    base_url, served = server
    archive = build_archive(served / "good.tar", dataset)
    cache = tmp_path / "cache"

    with pytest.raises(FetchError) as raised:
        fetch_archive(Archive("Synthetic", "truncated.tar", archive.md5), cache, base_url=base_url)

    message = str(raised.value)
    assert f"{base_url}/truncated.tar" in message
    assert "fetch again" in message
    assert files_under(cache) == []


def test_missing_file_on_server(server, tmp_path):
    base_url, _ = server

    with pytest.raises(FetchError) as raised:
        fetch_archive(Archive("Synthetic", "absent.tar", "0" * 32), tmp_path / "cache", base_url=base_url)

    message = str(raised.value)
    assert f"cannot download {base_url}/absent.tar" in message
    assert "HTTP 404" in message
    assert files_under(tmp_path / "cache") == []


def test_plain_http_to_other_hosts_rejected(tmp_path):
    # Rejected before any connection is made, so no server is needed.
    with pytest.raises(FetchError, match=r"invalid download URL http://example\.org/x\.tar: only HTTPS URLs are allowed"):
        fetch_archive(Archive("X", "x.tar", "0" * 32), tmp_path / "cache", base_url="http://example.org")


def test_archive_without_dataset_folder(server, tmp_path):
    base_url, served = server
    other = tmp_path / "source" / "Other"
    other.mkdir(parents=True)
    (other / "readme.txt").write_text("not a dataset")
    built = build_archive(served / "other.tar", other)

    with pytest.raises(FetchError) as raised:
        fetch_archive(Archive("Synthetic", "other.tar", built.md5), tmp_path / "cache", base_url=base_url)

    message = str(raised.value)
    assert "does not contain Synthetic/dataset.json" in message
    assert "'Other'" in message
    assert files_under(tmp_path / "cache") == []


def _malicious_members(outside: Path) -> dict[str, tuple[list[tarfile.TarInfo], dict[str, bytes], str]]:
    """Each case: extra members, their contents, and the reason the error must give."""
    payload = b"written by a malicious archive\n"
    return {
        "parent": ([member("Synthetic/../../../outside/parent.txt")], {"Synthetic/../../../outside/parent.txt": payload}, "contains '..'"),
        "absolute": ([member(str(outside / "absolute.txt"))], {str(outside / "absolute.txt"): payload}, "has an absolute path"),
        "symlink": (
            [member("Synthetic/imagesTr/escape", tarfile.SYMTYPE, str(outside)), member("Synthetic/imagesTr/escape/through.txt")],
            {"Synthetic/imagesTr/escape/through.txt": payload},
            "is a symbolic link",
        ),
        "relative symlink": (
            [member("Synthetic/up", tarfile.SYMTYPE, "../../../outside"), member("Synthetic/up/relative.txt")],
            {"Synthetic/up/relative.txt": payload},
            "is a symbolic link to '../../../outside'",
        ),
        "hard link": ([member("Synthetic/copy", tarfile.LNKTYPE, str(outside / "secret.txt"))], {}, "is a hard link"),
        "device": ([member("Synthetic/null", tarfile.CHRTYPE)], {}, "is a character device"),
    }


@pytest.mark.parametrize("case", ["parent", "absolute", "symlink", "relative symlink", "hard link", "device"])
def test_malicious_archive_rejected(server, dataset, tmp_path, case):
    base_url, served = server
    # Extraction happens in <cache>/<staging folder>/, so "Synthetic/../../../outside" is tmp_path / "outside".
    cache = tmp_path / "cache"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("a file outside the cache\n")
    before = files_under(outside)
    extra, data, reason = _malicious_members(outside)[case]
    archive = build_archive(served / "bad.tar", dataset, extra, data)

    with pytest.raises(FetchError) as raised:
        fetch_archive(archive, cache, base_url=base_url)

    message = str(raised.value)
    assert "bad.tar is unsafe to extract" in message
    assert repr(extra[0].name) in message
    assert reason in message
    assert files_under(outside) == before
    assert (outside / "secret.txt").read_text() == "a file outside the cache\n"
    assert files_under(cache) == []


def test_link_inside_archive_accepted(server, dataset, tmp_path):
    base_url, served = server
    extra = [member("Synthetic/imagesTr/first.nii.gz", tarfile.SYMTYPE, "case_000.nii.gz"), member("Synthetic/second.nii.gz", tarfile.LNKTYPE, "Synthetic/imagesTr/case_001.nii.gz")]
    archive = build_archive(served / "links.tar", dataset, extra)

    folder = fetch_archive(archive, tmp_path / "cache", base_url=base_url)

    assert (folder / "imagesTr" / "first.nii.gz").resolve() == (folder / "imagesTr" / "case_000.nii.gz").resolve()
    assert (folder / "second.nii.gz").read_bytes() == (folder / "imagesTr" / "case_001.nii.gz").read_bytes()


@pytest.mark.parametrize("name", ["Task04_Hippocampus", "task04", "hippocampus", "HIPPOCAMPUS"])
def test_find_archive_accepts_short_names(name):
    archive = find_archive(name)
    assert archive.name == "Task04_Hippocampus"
    assert archive.filename == "Task04_Hippocampus.tar"
    assert archive.md5 == "9d24dba78a72977dbd1d2e110310f31b"


def test_find_archive_suggests_close_name():
    with pytest.raises(FetchError) as raised:
        find_archive("Task04_Hipocampus")
    message = str(raised.value)
    assert "unknown dataset 'Task04_Hipocampus'" in message
    assert "did you mean 'Task04_Hippocampus'" in message
    assert "Task09_Spleen" in message


def test_cli_unknown_dataset_is_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "studies.cli", "data", "fetch", "hipocampus", "--cache", str(tmp_path / "cache")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "400"},
    )

    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert "unknown dataset 'hipocampus'; did you mean 'Task04_Hippocampus'?" in lines[0]
    assert not (tmp_path / "cache").exists()
