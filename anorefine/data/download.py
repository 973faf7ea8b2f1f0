"""Download of the dataset archives with a direct URL (MVTec AD, MVTec LOCO AD, VisA, BTAD): stream,
verify sha256, extract safely, rename into place."""

from __future__ import annotations

import hashlib
import lzma
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.request import Request, urlopen

from anorefine.data.mvtec import GOOD
from anorefine.data.visa import SPLIT_CSV
from anorefine.errors import DataError

_CHUNK = 1 << 20

Progress = Callable[[int, int | None], None]


@dataclass(frozen=True)
class Archive:
    """A dataset archive as published, with the sha256 that anomalib 2.7 records for it."""

    name: str
    url: str
    sha256: str
    #: A glob under the root that exists once the archive is extracted there.
    marker: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


ARCHIVES: dict[str, Archive] = {
    "mvtec": Archive(
        "MVTec AD",
        "https://www.mydrive.ch/shares/150996/b52ecdcbf521176e9db9c731f2304b27/"
        "download/420938113-1629960298/mvtec_anomaly_detection.tar.xz",
        "cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d",
        f"*/train/{GOOD}",
    ),
    "visa": Archive(
        "VisA",
        "https://amazon-visual-anomaly.s3.us-west-2.amazonaws.com/VisA_20220922.tar",
        "2eb8690c803ab37de0324772964100169ec8ba1fa3f7e94291c9ca673f40f362",
        SPLIT_CSV.as_posix(),
    ),
    "mvtec_loco": Archive(
        "MVTec LOCO AD",
        "https://www.mydrive.ch/shares/48237/1b9106ccdfbb09a0c414bd49fe44a14a/download/430647091-1646842701/"
        "mvtec_loco_anomaly_detection.tar.xz",
        "9e7c84dba550fd2e59d8e9e231c929c45ba737b6b6a6d3814100f54d63aae687",
        f"breakfast_box/train/{GOOD}",
    ),
    "btad": Archive(
        "BTAD",
        "https://avires.dimi.uniud.it/papers/btad/btad.zip",
        "461c9387e515bfed41ecaae07c50cf6b10def647b36c9e31d239ab2736b10d2a",
        "01/train/ok",
    ),
}


def is_extracted(archive: Archive, root: Path) -> bool:
    """True when `root` holds the extracted `archive` (its marker: VisA's split CSV, a category's train
    folder)."""
    return root.is_dir() and any(root.glob(archive.marker))


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str, source: str) -> None:
    """Raise DataError when the file's sha256 is not `expected`."""
    actual = sha256_of(path)
    if actual != expected.lower():
        raise DataError(
            f"sha256 mismatch for {path} (from {source}): expected {expected}, got {actual}; "
            f"the download is corrupt or incomplete: run the download again"
        )


def fetch(url: str, dest: Path, progress: Progress | None = None) -> None:
    """Stream `url` into the file `dest`, calling progress(bytes_done, total_or_None) per chunk."""
    request = Request(url, headers={"User-Agent": "anorefine"})
    try:
        with urlopen(request, timeout=60) as response, dest.open("wb") as out:
            total, done = getattr(response, "length", None), 0
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
    except (URLError, OSError) as err:
        raise DataError(f"cannot download {url}: {err}; check the connection and download again") from err


def _check_inside(archive: Path, member: str, base: Path) -> None:
    """Refuse an archive member whose path would leave the (resolved) extraction folder ``base``."""
    if not (base / member).resolve().is_relative_to(base):
        raise DataError(f"archive {archive} member '{member}' would be written outside {base}: refused")


def _damaged(archive: Path, err: Exception) -> DataError:
    return DataError(f"cannot extract {archive}: {err}; the archive is damaged: run the download again")


def extract_tar(archive: Path, dest: Path) -> None:
    """Extract a tar archive into `dest` in one pass, refusing links, special files and paths escaping `dest`.

    On a refused member, what came before it stays in `dest`: extract into a temporary folder.
    """
    base = dest.resolve()
    extra: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            for member in tar:  # streaming: a .tar.xz is decompressed once
                if not (member.isfile() or member.isdir()):
                    raise DataError(f"archive {archive} has a link or special file '{member.name}': refused")
                _check_inside(archive, member.name, base)
                tar.extract(member, dest, **extra)
    except (tarfile.TarError, lzma.LZMAError, EOFError) as err:
        raise _damaged(archive, err) from err


def extract_zip(archive: Path, dest: Path) -> None:
    """Extract a zip archive into `dest`, refusing links and paths escaping `dest` (as ``extract_tar``)."""
    base = dest.resolve()
    try:
        with zipfile.ZipFile(archive) as zipped:
            for member in zipped.infolist():
                if stat.S_ISLNK(member.external_attr >> 16):
                    raise DataError(f"archive {archive} has a link '{member.filename}': refused")
                _check_inside(archive, member.filename, base)
                zipped.extract(member, dest)
    except (zipfile.BadZipFile, EOFError) as err:
        raise _damaged(archive, err) from err


def extract_archive(archive: Path, dest: Path) -> None:
    """Extract a .zip or a tar archive (any compression) into `dest`."""
    if archive.suffix.lower() == ".zip":
        extract_zip(archive, dest)
    else:
        extract_tar(archive, dest)


def download_dataset(kind: str, root: Path, progress: Progress | None = None) -> Path:
    """Download, verify and extract dataset `kind` (a key of ``ARCHIVES``) into `root`; return root.

    Does nothing when `root` already holds the dataset. Works in temporary siblings of `root`
    and renames the extracted tree into place last, so a failed run leaves `root` untouched.
    """
    if kind not in ARCHIVES:
        raise DataError(f"unknown dataset '{kind}' to download: choose one of {sorted(ARCHIVES)}")
    archive, root = ARCHIVES[kind], Path(root)
    if is_extracted(archive, root):
        return root
    if root.is_dir() and any(root.iterdir()):
        raise DataError(
            f"{root} is not empty and holds no {archive.name}: download into a new or empty folder"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".download", dir=root.parent))
    try:
        archive_path = workdir / archive.filename
        fetch(archive.url, archive_path, progress)
        verify_sha256(archive_path, archive.sha256, archive.url)
        extracted = workdir / "extracted"
        extracted.mkdir()
        extract_archive(archive_path, extracted)
        archive_path.unlink()
        if not is_extracted(archive, extracted):  # in one top folder (maybe beside other files)
            inner = [d for d in extracted.iterdir() if d.is_dir() and is_extracted(archive, d)]
            extracted = inner[0] if len(inner) == 1 else extracted
        if not is_extracted(archive, extracted):
            raise DataError(
                f"archive {archive.filename} holds no {archive.marker}: not the {archive.name} archive"
            )
        if root.is_dir():
            root.rmdir()
        os.replace(extracted, root)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return root
