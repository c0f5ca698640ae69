"""Downloads against a local HTTP server: checksums, mirrors, interrupted transfers,
unsafe archives, and that no failure leaves anything a later run would trust."""

import gzip
import hashlib
import io
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
from synth import files_under

from vglab.data import DataError, fetch, load, sources
from vglab.data.download import download, extract_tar

CIFAR_DIR = "cifar-10-batches-bin"


@pytest.fixture
def server():
    """An HTTP server on 127.0.0.1 serving `routes` (path -> bytes). A value
    `("cut", body)` announces more bytes than it sends, then hangs up."""
    routes, hits = {}, []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            body = routes.get(self.path)
            if body is None:
                self.send_error(404)
                return
            cut = isinstance(body, tuple)
            body = body[1] if cut else body
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) + (1000 if cut else 0)))
            self.end_headers()
            self.wfile.write(body)  # HTTP/1.0: the connection closes after this

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield SimpleNamespace(url=f"http://127.0.0.1:{httpd.server_port}", routes=routes, hits=hits)
    httpd.shutdown()
    httpd.server_close()


def serve_mnist(server, tiny, prefix="/mnist/"):
    for rel, data in tiny.items():
        if rel.startswith("mnist/"):
            server.routes[prefix + rel.split("/")[1]] = gzip.compress(data)
    return server.url + prefix


def tar_gz(members: dict[str, bytes | tarfile.TarInfo]) -> bytes:
    """A .tar.gz holding `members` (name -> content, or a ready TarInfo for links etc.)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in members.items():
            if isinstance(content, tarfile.TarInfo):
                tar.addfile(content)
            else:
                info = tarfile.TarInfo(name)
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def cifar_archive(tiny) -> bytes:
    return tar_gz({f"{CIFAR_DIR}/{rel.rsplit('/', 1)[1]}": data
                   for rel, data in tiny.items() if rel.startswith("cifar10/")})


def serve_cifar(server, monkeypatch, archive: bytes, md5: str | None = None) -> list[str]:
    """Serve `archive` and make its MD5 (or `md5`) the expected one."""
    server.routes["/cifar-10-binary.tar.gz"] = archive
    monkeypatch.setattr(sources, "CIFAR10_ARCHIVE_MD5", "md5:" + (md5 or hashlib.md5(archive).hexdigest()))
    return [server.url + "/cifar-10-binary.tar.gz"]


# ----------------------------------------------------------------------------- MNIST


def test_fetch_mnist_then_load_from_cache_without_refetching(server, tiny, cache_dir):
    url = serve_mnist(server, tiny)
    folder = fetch("mnist", quiet=True, urls=[server.url + "/nowhere/", url])  # first mirror 404s
    assert folder == cache_dir / "mnist"
    assert sorted(p.name for p in files_under(cache_dir)) == sorted(sources.DATASETS["mnist"].files)
    assert load("mnist", download=False).x_train.shape == (20, 28, 28)
    hits = len(server.hits)
    assert fetch("mnist", quiet=True, urls=[url]) == folder and len(server.hits) == hits  # already there


def test_load_downloads_into_the_cache_when_missing(server, tiny, cache_dir, monkeypatch):
    monkeypatch.setattr(sources, "MNIST_MIRRORS", [serve_mnist(server, tiny)])
    assert load("mnist").source == str((cache_dir / "mnist").resolve())


def test_fetch_mnist_checksum_mismatch_leaves_nothing(server, tiny, cache_dir):
    url = serve_mnist(server, tiny)
    server.routes["/mnist/train-images-idx3-ubyte.gz"] = gzip.compress(b"not the right bytes")
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz(?s:.*)checksum mismatch"):
        fetch("mnist", quiet=True, urls=[url])
    assert "train-images-idx3-ubyte.gz" not in [p.name for p in files_under(cache_dir)]
    assert not [p for p in files_under(cache_dir) if p.name.startswith(".")]  # no temp files


def test_interrupted_transfer_leaves_nothing(server, tiny, cache_dir):
    url = serve_mnist(server, tiny)
    name = "/mnist/t10k-images-idx3-ubyte.gz"
    server.routes[name] = ("cut", server.routes[name][:100])
    with pytest.raises(DataError, match="interrupted after 100 of"):
        download([server.url + name], cache_dir / "x.gz", "md5:" + "0" * 32, gunzip=True)
    assert files_under(cache_dir) == []


def test_fetch_shows_a_progress_bar_unless_quiet(server, tiny, cache_dir, capsys):
    import shutil

    url = serve_mnist(server, tiny)
    folder = fetch("mnist", quiet=True, urls=[url])
    assert sorted(p.name for p in files_under(cache_dir)) == sorted(sources.DATASETS["mnist"].files)  # downloaded
    quiet = capsys.readouterr()
    assert "ubyte.gz" not in quiet.err + quiet.out, quiet  # ...without a bar
    shutil.rmtree(folder)
    fetch("mnist", urls=[url])
    assert "t10k-images-idx3-ubyte.gz" in capsys.readouterr().err


def test_all_mirrors_failing_lists_each_failure(server, cache_dir):
    with pytest.raises(DataError) as e:
        download([server.url + "/a", server.url + "/b"], cache_dir / "f", "md5:" + "0" * 32)
    assert "/a: download failed" in str(e.value) and "/b: download failed" in str(e.value)
    assert files_under(cache_dir) == []


# ----------------------------------------------------------------------------- CIFAR-10


def test_fetch_cifar_extracts_into_place(server, tiny, cache_dir, monkeypatch):
    urls = serve_cifar(server, monkeypatch, cifar_archive(tiny))
    folder = fetch("cifar10", quiet=True, urls=urls)
    assert folder == cache_dir / "cifar10" / CIFAR_DIR
    assert sorted(p.name for p in folder.iterdir()) == sorted(sources.DATASETS["cifar10"].files)
    assert [p.parent for p in files_under(cache_dir)] == [folder] * 6  # archive and temp dirs gone
    assert load("cifar10", download=False).x_train.shape == (20, 32, 32, 3)


def test_fetch_cifar_replaces_a_corrupt_copy(server, tiny, cache_dir, monkeypatch):
    folder = cache_dir / "cifar10" / CIFAR_DIR
    folder.mkdir(parents=True)
    (folder / "data_batch_1.bin").write_bytes(b"garbage")
    fetch("cifar10", quiet=True, urls=serve_cifar(server, monkeypatch, cifar_archive(tiny)))
    assert load("cifar10", download=False).x_train.shape == (20, 32, 32, 3)


def test_fetch_cifar_checksum_mismatch_leaves_nothing(server, tiny, cache_dir, monkeypatch):
    urls = serve_cifar(server, monkeypatch, cifar_archive(tiny), md5="0" * 32)
    with pytest.raises(DataError, match="checksum mismatch"):
        fetch("cifar10", quiet=True, urls=urls)
    assert files_under(cache_dir) == []


def link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


UNSAFE = {
    "parent": {"../evil.bin": b"x"},
    "nested parent": {f"{CIFAR_DIR}/../../evil.bin": b"x"},
    "absolute": {"/tmp/vglab-evil.bin": b"x"},
    "symlink": {"s": link(f"{CIFAR_DIR}/batches.meta.txt", "/etc/passwd", tarfile.SYMTYPE)},
    "hardlink": {"h": link(f"{CIFAR_DIR}/batches.meta.txt", "/etc/passwd", tarfile.LNKTYPE)},
    "device": {"d": link(f"{CIFAR_DIR}/dev", "", tarfile.CHRTYPE)},
}


@pytest.mark.parametrize("case", list(UNSAFE))
def test_fetch_cifar_refuses_unsafe_archives(server, tiny, cache_dir, tmp_path, monkeypatch, case):
    good = {f"{CIFAR_DIR}/{rel.rsplit('/', 1)[1]}": data for rel, data in tiny.items() if rel.startswith("cifar10/")}
    urls = serve_cifar(server, monkeypatch, tar_gz({**UNSAFE[case], **good}))  # bad member first
    with pytest.raises(DataError, match="refusing"):
        fetch("cifar10", quiet=True, urls=urls)
    assert files_under(cache_dir) == []
    assert not (tmp_path / "evil.bin").exists() and not (cache_dir / "evil.bin").exists()


def test_extract_tar_refuses_before_writing_anything(tmp_path):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(tar_gz({"ok.txt": b"fine", "../evil.txt": b"x"}))
    with pytest.raises(DataError, match="unsafe member path '../evil.txt'"):
        extract_tar(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.txt").exists()


def test_fetch_cifar_rejects_archive_without_the_batches(server, cache_dir, monkeypatch):
    urls = serve_cifar(server, monkeypatch, tar_gz({"README": b"hello"}))
    with pytest.raises(DataError, match="lacks"):
        fetch("cifar10", quiet=True, urls=urls)
    assert files_under(cache_dir) == []
