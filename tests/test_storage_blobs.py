"""The content-addressed blob store: atomic writes, id validation, quotas, retention."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from storage.blobs import BlobStore, check_sha
from storage.errors import BlobNotFoundError, InvalidBlobIdError, QuotaExceededError
from stylejax.errors import StyleJAXError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def blobs(tmp_path: Path):
    with BlobStore(tmp_path / "blobs", max_bytes_per_user=1000) as b:
        yield b


def age(path: Path, seconds: float) -> None:
    """Make a file look `seconds` old."""
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_put_get_roundtrip_and_layout(blobs: BlobStore) -> None:
    data = b"\x89PNG fake photo bytes"
    sha = blobs.put(data)
    assert sha == hashlib.sha256(data).hexdigest()
    assert blobs.get(sha) == data and blobs.exists(sha)
    assert blobs.path(sha) == blobs.root / sha[:2] / sha[2:4] / sha
    assert list(blobs) == [sha]
    assert blobs.put(bytearray(data)) == sha and blobs.put(memoryview(data)) == sha
    assert list(blobs) == [sha]  # same content, one file


def test_missing_blob(blobs: BlobStore) -> None:
    sha = hashlib.sha256(b"never stored").hexdigest()
    assert not blobs.exists(sha)
    with pytest.raises(BlobNotFoundError):
        blobs.get(sha)
    assert blobs.delete(sha) is False


@pytest.mark.parametrize("bad", [
    "../../etc/passwd", "/etc/passwd", "..", "", "A" * 64, "g" * 64, "a" * 63, "a" * 65,
    "a" * 62 + "/.", "a" * 63 + "\x00", " " + "a" * 63, None, 123,
])
def test_bad_ids_are_rejected_before_touching_files(blobs: BlobStore, bad: object) -> None:
    for call in (blobs.path, blobs.get, blobs.exists, blobs.delete, check_sha):
        with pytest.raises(ValueError):
            call(bad)
    with pytest.raises(InvalidBlobIdError):
        blobs.get(bad)


def test_failed_write_leaves_nothing(blobs: BlobStore, monkeypatch) -> None:
    data = b"photo that fails to land"
    sha = hashlib.sha256(data).hexdigest()

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        blobs.put(data, owner="u1")
    monkeypatch.undo()
    assert not blobs.exists(sha)
    assert list(blobs.path(sha).parent.iterdir()) == []  # temp file cleaned up
    assert blobs.usage("u1") == 0  # the charge rolled back with the failed write
    assert blobs.put(data, owner="u1") == sha and blobs.usage("u1") == len(data)


def test_crash_mid_write_never_exposes_a_partial_blob(blobs: BlobStore) -> None:
    """A writer process dies between writing its temp file and renaming it."""
    data = os.urandom(200_000)
    sha = hashlib.sha256(data).hexdigest()
    script = (
        "import os, sys\n"
        "from storage.blobs import BlobStore\n"
        "def die(src, dst):\n"
        "    os._exit(9)\n"
        "os.replace = die\n"
        "BlobStore(sys.argv[1], max_bytes_per_user=None).put(sys.stdin.buffer.read(), 'u')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(blobs.root)], input=data,
                          cwd=REPO, capture_output=True, timeout=60)
    assert proc.returncode == 9, proc.stderr.decode()
    leftovers = list(blobs.path(sha).parent.iterdir())
    assert len(leftovers) == 1 and leftovers[0].name.endswith(".tmp")
    assert leftovers[0].stat().st_size == len(data)  # the bytes were there, only unnamed
    assert not blobs.exists(sha) and list(blobs) == []
    with pytest.raises(BlobNotFoundError):
        blobs.get(sha)
    assert blobs.usage("u") == 0  # the crashed writer's charge never committed
    # A retry succeeds; the next sweep removes the abandoned temp file.
    assert blobs.put(data) == sha and blobs.get(sha) == data
    age(leftovers[0], 3600)
    assert blobs.sweep(older_than_s=60) == 0  # the blob itself is young
    assert [p.name for p in blobs.path(sha).parent.iterdir()] == [sha]


def test_quota(blobs: BlobStore) -> None:
    first = blobs.put(b"a" * 600, owner="alice")
    assert blobs.usage("alice") == 600
    assert blobs.put(b"a" * 600, owner="alice") == first  # already hers: not charged again
    assert blobs.usage("alice") == 600
    with pytest.raises(QuotaExceededError) as info:
        blobs.put(b"b" * 600, owner="alice")
    err = info.value
    assert isinstance(err, StyleJAXError) and (err.used, err.size, err.limit) == (600, 600, 1000)
    assert "storage is full" in str(err) and "/" not in str(err).split("(")[0]
    assert not blobs.exists(hashlib.sha256(b"b" * 600).hexdigest())  # nothing written
    # Other owners and anonymous writes have their own accounts.
    assert blobs.put(b"a" * 600, owner="bob") == first and blobs.usage("bob") == 600
    blobs.put(b"c" * 5000)
    assert blobs.put(b"d" * 400, owner="alice") and blobs.usage("alice") == 1000
    # Freeing space: delete drops every owner's charge; release drops one owner's.
    assert blobs.release("bob") == 1 and blobs.usage("bob") == 0 and blobs.exists(first)
    assert blobs.delete(first) is True and blobs.usage("alice") == 400
    blobs.put(b"b" * 600, owner="alice")
    assert blobs.usage("alice") == 1000


def test_quota_holds_under_concurrent_puts(blobs: BlobStore) -> None:
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def upload(i: int) -> None:
        barrier.wait()
        try:
            blobs.put(bytes([i]) * 400, owner="carol")
            outcomes.append("ok")
        except QuotaExceededError:
            outcomes.append("full")

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["full", "full", "ok", "ok"]
    assert blobs.usage("carol") == 800


def test_unlimited_quota(tmp_path: Path) -> None:
    with BlobStore(tmp_path, max_bytes_per_user=None, fsync=False) as b:
        b.put(os.urandom(50_000), owner="x")
        assert b.usage("x") == 50_000


def test_sweep_removes_old_unreferenced_blobs(blobs: BlobStore) -> None:
    old_kept = blobs.put(b"old but a job uses it", owner="u")
    old_gone = blobs.put(b"old and orphaned", owner="u")
    young = blobs.put(b"just uploaded", owner="u")
    refreshed = blobs.put(b"old, uploaded again today", owner="u")
    for sha in (old_kept, old_gone, refreshed):
        age(blobs.path(sha), 10 * 86400)
    blobs.put(b"old, uploaded again today")  # storing again makes it young again

    assert blobs.sweep(older_than_s=7 * 86400, keep={old_kept}) == 1
    assert not blobs.exists(old_gone)
    assert all(blobs.exists(s) for s in (old_kept, young, refreshed))
    assert blobs.usage("u") == sum(len(blobs.get(s)) for s in (old_kept, young, refreshed))
    assert blobs.sweep(older_than_s=0, keep={old_kept}) == 2
    assert list(blobs) == [old_kept]


def test_sweep_forgets_charges_for_vanished_files(blobs: BlobStore) -> None:
    sha = blobs.put(b"x" * 300, owner="u")
    blobs.path(sha).unlink()  # removed behind the store's back
    assert blobs.usage("u") == 300
    blobs.sweep(older_than_s=86400)
    assert blobs.usage("u") == 0


def test_concurrent_puts_of_same_content(blobs: BlobStore) -> None:
    data = os.urandom(100_000)
    shas: list[str] = []
    threads = [threading.Thread(target=lambda: shas.append(blobs.put(data))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(shas)) == 1 and blobs.get(shas[0]) == data
    assert [p.name for p in blobs.path(shas[0]).parent.iterdir()] == [shas[0]]
