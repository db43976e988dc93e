"""`unpack-data`: put a dataset archive (.zip, .tar, .tar.gz) onto local disk, then check it.

On Colab, training that reads thousands of small images from a mounted Google Drive is slow; one
archive copied to the machine's own disk is not. The archive may hold the dataset folder, just its
content, or either inside one wrapping folder (what a Drive export makes); anything else is refused
before a byte is written, and nothing is ever written outside the destination.
"""

from __future__ import annotations

import contextlib
import copy
import gzip
import lzma
import posixpath
import shutil
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

from sprc_lib.data.check import run_check
from sprc_lib.data.errors import DataError
from sprc_lib.data.schema import CIRR_DIR, DATASETS, FASHIONIQ_DIR
from sprc_lib.files import atomic_path
from sprc_lib.paths import data_root
from sprc_lib.progress import tqdm

FOLDERS = {"CIRR": CIRR_DIR, "FashionIQ": FASHIONIQ_DIR}
# A folder is taken for a dataset's content when it holds these (the annotations), and may hold the rest.
REQUIRED = {"CIRR": ("cirr",), "FashionIQ": ("captions", "image_splits")}
CONTENT = {"CIRR": "cirr/, train/, dev/, test1/", "FashionIQ": "captions/, image_splits/, images/"}
SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
JUNK = ("__MACOSX", ".DS_Store")  # what macOS adds to the archives it makes: never unpacked
DAMAGED = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError)
SHOWN = 6  # top-level names listed in a wrong-layout message
# The standard library's own guard against unsafe tar members, on the Pythons that have it (3.11.4+).
TAR_FILTER = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}

Member = zipfile.ZipInfo | tarfile.TarInfo
Members = list[tuple[tuple[str, ...], Member]]


def _damaged(archive: Path, why: object) -> DataError:
    return DataError(f"{archive}: the archive is damaged ({why}); copy or download it again (a Drive file that "
                     "has not finished syncing, or a download cut short, reads like this)")


@contextlib.contextmanager
def _opened(archive: Path) -> Iterator[zipfile.ZipFile | tarfile.TarFile]:
    """The archive, open; damage found at any point while reading it is reported as damage, not a traceback."""
    if archive.is_dir():
        raise DataError(f"{archive}: is a folder, not an archive; if it holds {CIRR_DIR}/ or {FASHIONIQ_DIR}/, "
                        "pass it as `data_path` as it is")
    if not archive.is_file():
        raise DataError(f"{archive}: no such file; check the path (on Colab, mount Google Drive first)")
    try:
        if tarfile.is_tarfile(archive):  # first: a tar holding a .zip can pass for a zip
            opener: Callable[[Path], zipfile.ZipFile | tarfile.TarFile] = tarfile.open
        elif zipfile.is_zipfile(archive):
            opener = zipfile.ZipFile
        elif archive.name.lower().endswith(SUFFIXES):
            raise _damaged(archive, "named like one, but not readable as a zip or a tar")
        else:
            raise DataError(f"{archive}: not a .zip, .tar, .tar.gz or .tgz archive; pass the archive that holds "
                            f"{CIRR_DIR}/ or {FASHIONIQ_DIR}/")
        with opener(archive) as reader:
            yield reader
    except DAMAGED as err:
        raise _damaged(archive, err) from err


def _parts(name: str, archive: Path) -> tuple[str, ...]:
    """A member's path as parts; an absolute path or a `..` would write outside the destination."""
    path = name.replace("\\", "/")
    parts = tuple(p for p in path.split("/") if p not in ("", "."))
    if path.startswith("/") or path[1:2] == ":" or ".." in parts:
        raise DataError(f"{archive}: refused: member {name!r} would be written outside the destination (an "
                        "absolute path or '..'); unpack only an archive made from the dataset folder")
    return parts


def _members(reader: zipfile.ZipFile | tarfile.TarFile, archive: Path) -> Members:
    """Every member with its path checked, macOS's extras left out."""
    if isinstance(reader, zipfile.ZipFile):
        members: list[Member] = list(reader.infolist())
    else:  # a tar lists itself only by being read through (minutes for a big .tar.gz): show that it moves
        members = list(tqdm(reader, desc=f"reading {archive.name}", unit=" files", leave=False))
        _check_tar_end(reader)
    named = [(_parts(m.filename if isinstance(m, zipfile.ZipInfo) else m.name, archive), m) for m in members]
    return [(parts, m) for parts, m in named if parts and parts[0] not in JUNK and parts[-1] not in JUNK]


def _check_tar_end(reader: tarfile.TarFile) -> None:
    """tarfile ends its listing at the first unreadable header without a word (a flipped byte, a cut-off
    copy), so what follows the last member must be the end's zero padding; reading it to the end also
    makes gzip check its checksum."""
    reader.fileobj.seek(reader.offset)
    while block := reader.fileobj.read(1 << 20):
        if block.count(0) != len(block):
            last = reader.members[-1].name if reader.members else "the start"
            raise tarfile.ReadError(f"unreadable data after {last!r}")


def _is_dir(member: Member) -> bool:
    return member.is_dir() if isinstance(member, zipfile.ZipInfo) else member.isdir()


def _size(member: Member) -> int:
    if isinstance(member, zipfile.ZipInfo):
        return member.file_size
    return member.size if member.isfile() else 0


def _children(members: Members, prefix: tuple[str, ...]) -> dict[str, bool]:
    """The names one level below `prefix`, each with whether it is a folder."""
    n, found = len(prefix), {}
    for parts, m in members:
        if len(parts) > n and parts[:n] == prefix:
            found[parts[n]] = found.get(parts[n], False) or len(parts) > n + 1 or _is_dir(m)
    return found


def _listing(names: dict[str, bool]) -> str:
    shown = sorted(f"{name}/" if is_dir else name for name, is_dir in names.items())
    more = f" (and {len(shown) - SHOWN} more)" if len(shown) > SHOWN else ""
    return ", ".join(shown[:SHOWN]) + more if shown else "nothing"


def _matches(names: dict[str, bool], wanted: list[str]) -> list[tuple[str, tuple[str, ...]]]:
    """(dataset, path of its content) for each dataset a folder holding `names` holds."""
    folders = [(d, (FOLDERS[d],)) for d in wanted if names.get(FOLDERS[d])]
    return folders or [(d, ()) for d in wanted if all(names.get(r) for r in REQUIRED[d])]


def _layout(members: Members, dataset: str | None, archive: Path) -> tuple[str, tuple[str, ...]]:
    """Which dataset the archive holds, and the path inside it of the dataset folder's content."""
    wanted = [dataset] if dataset else list(DATASETS)
    top = _children(members, ())
    found = _matches(top, wanted)
    seen = _listing(top)
    if not found and len(top) == 1 and all(top.values()):  # one wrapping folder
        (wrapper,) = top
        inside = _children(members, (wrapper,))
        found = [(d, (wrapper, *path)) for d, path in _matches(inside, wanted)]
        seen += f" (holding {_listing(inside)})"
    if len(found) > 1:
        raise DataError(f"{archive}: holds both {CIRR_DIR}/ and {FASHIONIQ_DIR}/; pass `dataset` CIRR or "
                        "FashionIQ to unpack one of them")
    if not found:
        expected = " or ".join(f"{FOLDERS[d]}/ (or its content: {CONTENT[d]})" for d in wanted)
        raise DataError(f"{archive}: found {seen} at its top level; it should hold {expected}, at the top or "
                        "inside one folder (see data/README.md)")
    return found[0]


def _renamed(member: tarfile.TarInfo, rel: tuple[str, ...], prefix: tuple[str, ...], archive: Path
             ) -> tarfile.TarInfo:
    """A tar member moved to its place in the dataset folder; a link out of that folder, or a device, is refused."""
    moved = copy.copy(member)
    moved.name = "/".join(rel)
    if member.issym() or member.islnk():
        # A symbolic link is relative to its own folder, a hard link names another member of the archive.
        start = posixpath.dirname("/".join((*prefix, *rel))) if member.issym() else ""
        target = posixpath.normpath(posixpath.join(start, member.linkname.replace("\\", "/")))
        parts = tuple(target.split("/"))
        if member.linkname.startswith("/") or parts[:len(prefix)] != prefix or ".." in parts:
            raise DataError(f"{archive}: refused: {member.name!r} links to {member.linkname!r}, outside the dataset "
                            "folder; unpack only an archive made from the dataset folder")
        if member.islnk():
            moved.linkname = "/".join(parts[len(prefix):])
    elif not (member.isfile() or member.isdir()):
        raise DataError(f"{archive}: refused: {member.name!r} is not a file, folder or link (a device or a pipe)")
    return moved


def _select(members: Members, prefix: tuple[str, ...], archive: Path) -> Members:
    """The members inside the dataset folder, their paths made relative to it."""
    n, chosen = len(prefix), []
    for parts, m in members:
        if len(parts) > n and parts[:n] == prefix:
            rel = parts[n:]
            chosen.append((rel, _renamed(m, rel, prefix, archive) if isinstance(m, tarfile.TarInfo) else m))
    return chosen


def _check_space(dest: Path, needed: int, archive: Path) -> None:
    """Refuse before writing: a disk that fills up halfway costs the whole copy (Colab's disk is shared)."""
    where = dest
    while not where.exists():
        where = where.parent
    free = shutil.disk_usage(where).free
    if needed > free:
        raise DataError(f"{archive}: needs {tqdm.format_sizeof(needed, 'B')} once unpacked, but {where} has "
                        f"{tqdm.format_sizeof(free, 'B')} free; free some space or unpack elsewhere (`out`)")


def _extract(reader: zipfile.ZipFile | tarfile.TarFile, chosen: Members, into: Path, archive: Path) -> None:
    into.mkdir()
    total = sum(_size(m) for _, m in chosen)
    with tqdm(total=total, unit="B", unit_scale=True, desc=f"unpacking {archive.name}") as bar:
        for rel, m in chosen:
            out = into.joinpath(*rel)
            if isinstance(m, tarfile.TarInfo):
                reader.extract(m, into, **TAR_FILTER)
            elif m.is_dir():
                out.mkdir(parents=True, exist_ok=True)
            else:
                out.parent.mkdir(parents=True, exist_ok=True)
                with reader.open(m) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            bar.update(_size(m))


def unpack_dataset(archive: str | Path, dest: str | Path | None = None, dataset: str | None = None,
                   skip_missing: bool = False, overwrite: bool = False) -> Path:
    """Unpack a dataset archive to `dest/<dataset folder>/` and run `check-data` on it.

    `dest` defaults to the data root (`$SPRC_DATA` or `data/`); `dataset` (CIRR or FashionIQ) is read
    from the layout when not given. The files go to a temporary folder beside the destination and are
    moved into place at the end, so an interrupted unpack never leaves a dataset folder that looks
    complete. `skip_missing` accepts missing images, as `check-data --skip-missing` does (FashionIQ
    copies usually miss some). Returns `dest`, the folder to pass as `--data-path`.
    """
    if dataset not in (None, *DATASETS):
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)} or None; got {dataset!r}")
    archive = Path(archive).expanduser()
    dest = Path(dest).expanduser() if dest is not None else data_root()
    with _opened(archive) as reader:
        members = _members(reader, archive)
        dataset, prefix = _layout(members, dataset, archive)
        chosen = _select(members, prefix, archive)
        target = dest / FOLDERS[dataset]
        if not overwrite and (target.is_file() or target.is_dir() and any(target.iterdir())):
            raise DataError(f"{target}: already exists and is not empty; pass `overwrite` to "
                            "replace it, or unpack elsewhere (`out`)")
        _check_space(dest, sum(_size(m) for _, m in chosen), archive)
        dest.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            _extract(reader, chosen, tmp, archive)
    print(f"unpacked {archive.name} to {target}")
    if run_check(dataset, dest, allow_missing=skip_missing):
        hint = "" if skip_missing else "; if only images are missing, accept that with `skip_missing`"
        again = f"check-data --dataset {dataset} --data-path {dest}" + " --skip-missing" * skip_missing
        raise DataError(f"{target}: unpacked, but not usable as it is (the report above says why){hint}; "
                        f"check again with `python -m sprc_lib {again}`")
    print(f"{dataset} is ready: pass `data_path` {dest}")
    return dest
