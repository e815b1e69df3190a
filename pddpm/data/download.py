"""Downloads with pooch: hash check (sha256, or md5 where only that is published), retries, resume of
interrupted transfers, a progress bar and an atomic move into place. A file whose hash is not yet known is
trusted on first use: its sha256 is recorded in a small table under the download folder and every later
download is checked against it."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pooch
import requests
import yaml
from tqdm.auto import tqdm

from pddpm.errors import PddpmInputError

log = logging.getLogger(__name__)

SOURCES_FILE = Path(__file__).with_name("sources.yaml")
TOFU_NAME = "sha256_first_use.tsv"
CHUNK = 1 << 16


def load_sources(path: str | os.PathLike = SOURCES_FILE) -> dict:
    """The download sources: `{source: {description, page, files: {name: {url, sha256, md5, note,
    members}}}}` (the format is described at the top of sources.yaml)."""
    return yaml.safe_load(Path(path).read_text())


def source_files(source: str, overrides: dict | None = None, sources: dict | None = None) -> dict[str, dict]:
    """`{file name: {"url", "sha256", "md5", "members"}}` of one source, with the config's overrides
    (`downloads.urls` / `downloads.sha256` / `downloads.md5`, keyed `source/file`) applied. An empty URL in
    the config marks the file as one to put in place by hand."""
    sources = load_sources() if sources is None else sources
    if source not in sources:
        raise PddpmInputError(f"{SOURCES_FILE}: no download source '{source}' (have: {', '.join(sources)})")
    overrides = overrides or {}
    files = {}
    for name, entry in sources[source]["files"].items():
        key = f"{source}/{name}"
        over = {k: (overrides.get(k) or {}).get(key) for k in ("urls", "sha256", "md5")}
        files[name] = {
            "url": entry.get("url") if over["urls"] is None else over["urls"],
            # a hash set in the config replaces both pins of sources.yaml
            "sha256": over["sha256"] or (None if over["md5"] else entry.get("sha256")),
            "md5": None if over["sha256"] else over["md5"] or entry.get("md5"),
            "members": entry.get("members") or {},
        }
    return files


def known_hash(entry: dict) -> str | None:
    """The hash pooch checks, in its notation: the sha256, else `md5:<hex>`, else None (trust on first use)."""
    if entry.get("sha256"):
        return entry["sha256"]
    return f"md5:{entry['md5']}" if entry.get("md5") else None


def missing_urls(source: str, overrides: dict | None = None) -> list[str]:
    """`source/file` keys that have no URL (to fail at DAG-build time with the fix)."""
    return [f"{source}/{n}" for n, f in source_files(source, overrides).items() if not f["url"]]


# ---------------------------------------------------------------------------------------------------
# trust on first use

@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise parallel download jobs that read and append the same hash table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_tofu(path: str | os.PathLike) -> dict[str, str]:
    """`{url: sha256}` recorded on first downloads."""
    path = Path(path)
    if not path.exists():
        return {}
    table = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 2 or len(parts[1]) != 64:
            raise PddpmInputError(f"{path}:{n}: expected 'url<TAB>sha256', got {line!r}; fix or delete the line")
        table[parts[0]] = parts[1]
    return table


def record_tofu(path: str | os.PathLike, url: str, sha256: str) -> None:
    path = Path(path)
    with _locked(path):
        table = read_tofu(path)
        table[url] = sha256
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("# sha256 of downloads whose hash sources.yaml does not pin (trusted on first use)\n"
                       + "".join(f"{u}\t{h}\n" for u, h in sorted(table.items())))
        os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------------
# resumable transfer

class ResumableDownloader:
    """A pooch downloader that keeps what arrived in `partial` and continues there with an HTTP Range
    request, so a dropped connection or a killed job does not restart a 4 GB transfer from zero.

    Pooch calls it with a temporary file in the target folder; once the transfer is complete the partial
    file becomes that temporary file, so pooch's hash check and atomic move apply unchanged.
    """

    def __init__(self, partial: str | os.PathLike, timeout: float = 60, progressbar: bool = True):
        self.partial = Path(partial)
        self.timeout = timeout
        self.progressbar = progressbar

    def __call__(self, url: str, output_file, pooch_obj=None) -> None:  # noqa: ARG002 (pooch's signature)
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        have = self.partial.stat().st_size if self.partial.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        with requests.get(url, stream=True, headers=headers, timeout=self.timeout) as resp:
            if resp.status_code == 416:  # the partial file is not a prefix of this resource: start over
                self.partial.unlink()
                raise requests.exceptions.ConnectionError(f"{url}: stale partial download discarded")
            resp.raise_for_status()
            if resp.status_code != 206:  # server ignores ranges: restart from byte 0
                have = 0
            length = resp.headers.get("Content-Length")
            total = have + int(length) if length is not None else None
            mode = "ab" if have else "wb"
            got = have
            with open(self.partial, mode) as fh, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                                     desc=Path(url).name, disable=not self.progressbar,
                                                     mininterval=2) as bar:
                try:
                    for chunk in resp.iter_content(CHUNK):
                        fh.write(chunk)
                        got += len(chunk)
                        bar.update(len(chunk))
                except requests.exceptions.RequestException as exc:
                    raise requests.exceptions.ConnectionError(
                        f"{url}: transfer interrupted after {got} bytes ({exc})") from exc
        if total is not None and got < total:
            raise requests.exceptions.ConnectionError(f"{url}: truncated transfer, {got} of {total} bytes")
        os.replace(self.partial, output_file)


def fetch(url: str, dest: str | os.PathLike, known: str | None = None, *, tofu: str | os.PathLike | None = None,
          retries: int = 3, timeout: float = 60, progressbar: bool = True) -> Path:
    """Download `url` to `dest` (atomically) and check its hash.

    `known`: a sha256 (hex) or `md5:<hex>` (pooch's notation, see `known_hash`). None: the sha256 recorded
    in `tofu` for this URL is used; if there is none, the download is trusted and its sha256 recorded
    there. A mismatch leaves nothing at `dest` and raises PddpmInputError naming the URL, both hashes and
    how to pin another. Transfers that break off are resumed on the next try.
    """
    dest = Path(dest)
    key = f"{dest.parent.name}/{dest.name}"
    if not url:
        raise PddpmInputError(f"{dest.name}: no download URL known; set it in the config "
                              f"(downloads.urls) or use source: local with your own copy")
    known = known or (read_tofu(tofu).get(url) if tofu else None)
    partial = dest.with_name(f".{dest.name}.part")
    fetcher = pooch.create(path=dest.parent, base_url="", registry={dest.name: known},
                           urls={dest.name: url}, retry_if_failed=retries)
    try:
        fetcher.fetch(dest.name, downloader=ResumableDownloader(partial, timeout, progressbar))
    except requests.exceptions.HTTPError as exc:
        raise PddpmInputError(f"download of {url} failed: {exc}. Check the URL (pddpm/data/sources.yaml or "
                              f"downloads.urls in the config) or place the file at {dest}") from exc
    except requests.exceptions.RequestException as exc:
        raise PddpmInputError(f"download of {url} failed after {retries + 1} tries: {exc}. Rerun to resume "
                              f"(kept so far: {partial})") from exc
    except ValueError as exc:  # pooch: hash mismatch; its temporary file is already deleted
        dest.unlink(missing_ok=True)
        raise PddpmInputError(
            f"download of {url} rejected: its hash differs from the expected {known} ({exc}). The file "
            f"changed upstream or the transfer is corrupt. Only if you trust the new file, pin its sha256: "
            f'downloads: {{sha256: {{"{key}": "<64 hex digits>"}}}}') from exc
    digest = pooch.file_hash(str(dest))
    if known is None and tofu:
        record_tofu(tofu, url, digest)
        log.warning("%s: no hash pinned; recorded sha256 %s in %s (trust on first use). Pin it in "
                    "pddpm/data/sources.yaml to check every download", url, digest, tofu)
    else:
        log.info("%s: %s verified; sha256 %s", url, "md5" if (known or "").startswith("md5:") else "hash",
                 digest)
    return dest
