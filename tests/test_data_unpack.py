"""`unpack-data`: archives of the toy datasets, in every accepted layout, unpacked and checked; wrong ones refused."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from sprc_lib.data.check import check_dataset
from sprc_lib.data.errors import DataError
from sprc_lib.data.unpack import unpack_dataset

JUNK = {"__MACOSX/._cap.json": b"mac", ".DS_Store": b"mac"}


def tree(root: Path, prefix: str) -> dict[str, Path]:
    """Every folder and file under `root`, named as an archive of it with `prefix` would name them."""
    return {prefix + p.relative_to(root).as_posix() + ("/" if p.is_dir() else ""): p for p in sorted(root.rglob("*"))}


def make_archive(path: Path, members: dict[str, Path | bytes]) -> Path:
    """An archive (.zip, else a tar compressed as its suffix says) of `members`: name -> a file or folder, or bytes."""
    if path.suffix == ".zip":
        with zipfile.ZipFile(path, "w") as zf:
            for name, src in members.items():
                if isinstance(src, bytes):
                    zf.writestr(name, src)
                else:
                    zf.write(src, name)
    else:
        with tarfile.open(path, "w:gz" if path.suffix in (".gz", ".tgz") else "w") as tar:
            for name, src in members.items():
                if isinstance(src, bytes):
                    info = tarfile.TarInfo(name)
                    info.size = len(src)
                    tar.addfile(info, io.BytesIO(src))
                else:
                    tar.add(src, name.rstrip("/"), recursive=False)
    return path


def files_under(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def cirr(toy_root: Path) -> Path:
    """The toy CIRR's dataset folder (shared: read it, never write into it)."""
    return toy_root / "cirr_dataset"


@pytest.fixture(scope="module")
def cirr_zip(cirr: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_archive(tmp_path_factory.mktemp("archives") / "cirr_dataset.zip", tree(cirr, "cirr_dataset/"))


def assert_unpacked_cirr(dest: Path, cirr: Path) -> None:
    """`dest/cirr_dataset` is the toy CIRR, byte for byte, usable as check-data says, with nothing else left."""
    assert files_under(dest / "cirr_dataset") == files_under(cirr)
    assert all(r.usable(allow_missing=False) for r in check_dataset("CIRR", dest))
    assert sorted(p.name for p in dest.iterdir()) == ["cirr_dataset"]


@pytest.mark.parametrize("suffix", [".zip", ".tar.gz", ".tar"])
def test_zip_and_tar_archives_unpack_to_a_checked_dataset(suffix, cirr, tmp_path, capsys):
    archive = make_archive(tmp_path / f"cirr{suffix}", tree(cirr, "cirr_dataset/"))
    dest = tmp_path / "local" / "data"
    assert unpack_dataset(archive, dest) == dest
    assert_unpacked_cirr(dest, cirr)
    assert f"`data_path` {dest}" in capsys.readouterr().out  # the setting; the command shows its flag


@pytest.mark.parametrize("prefix", ["cirr_dataset/", "", "MyDrive-export/cirr_dataset/", "MyDrive-export/"],
                         ids=["dataset-folder", "bare-content", "wrapped-folder", "wrapped-content"])
def test_each_layout_lands_in_the_dataset_folder(prefix, cirr, tmp_path):
    archive = make_archive(tmp_path / "cirr.zip", {**tree(cirr, prefix), **JUNK})
    assert unpack_dataset(archive, tmp_path / "out") == tmp_path / "out"
    assert_unpacked_cirr(tmp_path / "out", cirr)


def test_fashioniq_is_detected_and_missing_images_need_skip_missing(toy_root, tmp_path):
    content = tree(toy_root / "fashionIQ_dataset", "")
    dropped = sorted(n for n in content if n.startswith("images/") and n != "images/")[:3]
    archive = make_archive(tmp_path / "fiq.tar", {n: p for n, p in content.items() if n not in dropped})
    dest = tmp_path / "out"
    with pytest.raises(DataError, match="`skip_missing`"):
        unpack_dataset(archive, dest)
    assert (dest / "fashionIQ_dataset" / "captions").is_dir()  # unpacked; only the check refused it
    assert unpack_dataset(archive, dest, skip_missing=True, overwrite=True) == dest
    reports = check_dataset("FashionIQ", dest)
    assert sum(len(r.missing) for r in reports) > 0 and all(r.usable(allow_missing=True) for r in reports)


@pytest.mark.parametrize(("members", "dataset", "named"), [
    ({"photos/a.png": b"x", "notes.txt": b"y"}, None, ["photos/", "notes.txt", "cirr_dataset/", "fashionIQ_dataset/"]),
    ({"export/photos/a.png": b"x"}, None, ["export/", "photos/", "cirr_dataset/"]),
    ({"cirr_dataset/cirr/captions/cap.rc2.train.json": b"[]"}, "FashionIQ", ["cirr_dataset/", "fashionIQ_dataset/"]),
], ids=["no-dataset", "wrapped-no-dataset", "other-dataset"])
def test_a_wrong_layout_names_what_was_found(members, dataset, named, tmp_path):
    archive = make_archive(tmp_path / "wrong.zip", members)
    with pytest.raises(DataError) as err:
        unpack_dataset(archive, tmp_path / "out", dataset)
    message = str(err.value)
    assert str(archive) in message and all(n in message for n in named), message
    assert not (tmp_path / "out").exists()


def unsafe(kind: str, where: Path) -> tuple[str, tarfile.TarInfo | None]:
    """A member name that points outside the destination, or a tar link that does (with its name)."""
    if kind == "symlink":
        link = tarfile.TarInfo("cirr_dataset/link")
        link.type, link.linkname = tarfile.SYMTYPE, "../../evil.txt"
        return "", link
    return {"dotdot-zip": "../evil.txt", "dotdot-tar": "cirr_dataset/../../evil.txt",
            "absolute": str(where / "evil.txt")}[kind], None


@pytest.mark.parametrize("kind", ["dotdot-zip", "dotdot-tar", "absolute", "symlink"])
def test_unsafe_members_are_refused_and_nothing_is_written(kind, cirr, tmp_path):
    name, link = unsafe(kind, tmp_path)
    archive = tmp_path / "archives" / ("evil.zip" if kind == "dotdot-zip" else "evil.tar")
    archive.parent.mkdir()
    make_archive(archive, {**tree(cirr / "cirr", "cirr_dataset/cirr/"), **({name: b"evil"} if name else {})})
    if link is not None:
        with tarfile.open(archive, "a") as tar:
            tar.addfile(link)
    dest = tmp_path / "a" / "b"
    with pytest.raises(DataError, match="refused"):
        unpack_dataset(archive, dest)
    assert not list(tmp_path.rglob("evil.txt")) and not list(tmp_path.rglob("link"))
    assert not dest.exists() or not any(dest.iterdir())


def test_an_existing_dataset_folder_needs_overwrite(cirr, cirr_zip, tmp_path):
    dest = tmp_path / "out"
    unpack_dataset(cirr_zip, dest)
    (dest / "cirr_dataset" / "mine.txt").write_text("keep me")
    with pytest.raises(DataError, match="`overwrite`"):
        unpack_dataset(cirr_zip, dest)
    assert (dest / "cirr_dataset" / "mine.txt").read_text() == "keep me"
    unpack_dataset(cirr_zip, dest, overwrite=True)
    assert_unpacked_cirr(dest, cirr)


def damage(kind: str, good: Path, path: Path) -> Path:
    """A broken copy of `good` at `path`: cut short, bytes flipped in the middle, or not an archive at all."""
    data = bytearray(good.read_bytes())
    middle = len(data) // 2
    if kind == "cut-short":
        data = data[:middle]
    elif kind == "flipped":
        data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    else:
        data = bytearray(b"just some text, not an archive\n" * 100)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(("kind", "suffix", "said"), [
    ("cut-short", ".zip", "damaged"), ("cut-short", ".tar.gz", "damaged"), ("cut-short", ".tar", "damaged"),
    ("flipped", ".zip", "damaged"), ("flipped", ".tar.gz", "damaged"),  # a plain tar has no checksum to fail
    ("text", ".zip", "damaged"), ("text", ".txt", "not a .zip"),
])
def test_a_damaged_archive_says_what_to_do(kind, suffix, said, cirr, tmp_path):
    annotations = tree(cirr / "cirr", "cirr_dataset/cirr/")  # enough to be damaged, quicker to pack than the images
    good = make_archive(tmp_path / ("good.zip" if suffix == ".txt" else f"good{suffix}"), annotations)
    broken = damage(kind, good, tmp_path / f"broken{suffix}")
    with pytest.raises(DataError) as err:
        unpack_dataset(broken, tmp_path / "out")
    assert str(broken) in str(err.value) and said in str(err.value), err.value
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # no half dataset, no temp folder


def test_a_missing_archive_is_named(tmp_path):
    with pytest.raises(DataError, match="no such file") as err:
        unpack_dataset(tmp_path / "nowhere.zip", tmp_path / "out")
    assert str(tmp_path / "nowhere.zip") in str(err.value)


def test_too_little_disk_space_is_refused_before_writing(cirr_zip, tmp_path, monkeypatch):
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    with pytest.raises(DataError, match=r"needs \d.*MB once unpacked, but .* has 1.00kB free"):
        unpack_dataset(cirr_zip, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def unpack_data(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sprc_lib", "unpack-data", *argv], capture_output=True, text=True)


def test_the_command_says_a_wrong_layout_in_one_line(tmp_path):
    archive = make_archive(tmp_path / "wrong.zip", {"photos/a.png": b"x"})
    done = unpack_data(str(archive), "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "photos/" in lines[0], done.stderr


def test_the_command_unpacks_a_good_archive(cirr, cirr_zip, tmp_path):
    done = unpack_data(str(cirr_zip), "--out", str(tmp_path / "out"), "--dataset", "cirr")
    assert done.returncode == 0, done.stderr
    assert f"--data-path {tmp_path / 'out'}" in done.stdout
    assert_unpacked_cirr(tmp_path / "out", cirr)
