"""Downloads against a loopback HTTP server: hashes, trust on first use, 404, truncation, resume."""

from __future__ import annotations

import hashlib
import os
import re

import pytest

from http_server import start
from pddpm.data import download
from pddpm.errors import PddpmInputError


@pytest.fixture
def server():
    state, srv = start()
    yield state
    srv.shutdown()
    srv.server_close()


def _body(n=300_000):
    return os.urandom(n)


def _sha(b):
    return hashlib.sha256(b).hexdigest()


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


def test_good_download_checks_pinned_hash(server, tmp_path):
    body = _body()
    url = server.serve("IXI/IXI-T2.tar", body)
    dest = download.fetch(url, tmp_path / "IXI-T2.tar", _sha(body), retries=0, progressbar=False)
    assert dest.read_bytes() == body
    assert _leftovers(tmp_path) == ["IXI-T2.tar"]


def test_wrong_hash_rejected_and_nothing_left(server, tmp_path):
    url = server.serve("a.tar", _body())
    dest = tmp_path / "src" / "a.tar"
    with pytest.raises(PddpmInputError, match="rejected: its hash differs") as err:
        download.fetch(url, dest, "0" * 64, retries=1, progressbar=False)
    # the message names the URL and the config key that would pin another hash
    assert url in str(err.value) and 'downloads: {sha256: {"src/a.tar": ' in str(err.value)
    assert _leftovers(dest.parent) == []
    # both tries downloaded from byte 0: a rejected file is never resumed
    assert [r for _, r in server.requests] == [None, None]


def test_404_names_the_url(server, tmp_path):
    url = server.url("missing/IXI.xls")
    with pytest.raises(PddpmInputError, match="404") as err:
        download.fetch(url, tmp_path / "IXI.xls", None, retries=0, progressbar=False)
    assert url in str(err.value)
    assert _leftovers(tmp_path) == []


def test_truncated_transfer_fails_and_keeps_only_the_partial(server, tmp_path):
    body = _body()
    url = server.serve("t.tar", body, truncate_at=1000, truncate_times=99, ranges=False)
    with pytest.raises(PddpmInputError, match="failed after 2 tries") as err:
        download.fetch(url, tmp_path / "t.tar", _sha(body), retries=1, progressbar=False)
    assert url in str(err.value)
    # no file under the final name; only the hidden partial that a rerun resumes from
    assert _leftovers(tmp_path) == [".t.tar.part"]


def test_interrupted_download_resumes_with_range(server, tmp_path):
    body = _body()
    url = server.serve("p.zip", body, truncate_at=120_000, truncate_times=1)
    dest = download.fetch(url, tmp_path / "p.zip", _sha(body), retries=2, progressbar=False)
    assert dest.read_bytes() == body
    assert server.requests[0][1] is None
    # the second request continues where the kept bytes end (whole chunks that arrived before the drop)
    offset = int(re.fullmatch(r"bytes=(\d+)-", server.requests[1][1]).group(1))
    assert 0 < offset <= 120_000
    assert _leftovers(tmp_path) == ["p.zip"]


def test_killed_job_resumes_from_partial_file(server, tmp_path):
    body = _body()
    (tmp_path / ".p.zip.part").write_bytes(body[:5000])  # what a killed earlier job left
    url = server.serve("p.zip", body)
    download.fetch(url, tmp_path / "p.zip", _sha(body), retries=0, progressbar=False)
    assert (tmp_path / "p.zip").read_bytes() == body
    assert server.requests == [("/p.zip", "bytes=5000-")]


def test_trust_on_first_use_records_then_checks(server, tmp_path):
    tofu = tmp_path / download.TOFU_NAME
    body = _body(5000)
    url = server.serve("sri24.zip", body)
    download.fetch(url, tmp_path / "sri24.zip", None, tofu=tofu, retries=0, progressbar=False)
    assert download.read_tofu(tofu) == {url: _sha(body)}
    # upstream changes: the later download is checked against the recorded hash and rejected
    (tmp_path / "sri24.zip").unlink()
    server.serve("sri24.zip", _body(5000))
    with pytest.raises(PddpmInputError, match="rejected"):
        download.fetch(url, tmp_path / "sri24.zip", None, tofu=tofu, retries=0, progressbar=False)
    assert not (tmp_path / "sri24.zip").exists()


def test_no_url_is_a_clear_error(tmp_path):
    with pytest.raises(PddpmInputError, match="downloads.urls"):
        download.fetch(None, tmp_path / "patient01.zip", None)


def test_md5_pin_checked_as_pooch_does(server, tmp_path):
    """IXI-T2.tar publishes only an md5: `md5:<hex>` is checked, a wrong one rejected."""
    body = _body()
    url = server.serve("IXI-T2.tar", body)
    entry = {"url": url, "sha256": None, "md5": hashlib.md5(body).hexdigest()}
    assert download.known_hash(entry) == f"md5:{entry['md5']}"
    tofu = tmp_path / download.TOFU_NAME
    dest = download.fetch(url, tmp_path / "ok" / "IXI-T2.tar", download.known_hash(entry), tofu=tofu,
                          retries=0, progressbar=False)
    assert dest.read_bytes() == body and not tofu.exists()  # pinned: nothing trusted on first use
    with pytest.raises(PddpmInputError, match="rejected: its hash differs from the expected md5:0{32}"):
        download.fetch(url, tmp_path / "bad" / "IXI-T2.tar", "md5:" + "0" * 32, retries=0, progressbar=False)
    assert not (tmp_path / "bad" / "IXI-T2.tar").exists()


def test_sources_file_lists_every_paper_source():
    sources = download.load_sources()
    assert {"ixi", "mslub", "sri24", "hdbet_v2", "pddpm_splits"} <= set(sources)
    for name, src in sources.items():
        for fname, entry in src["files"].items():
            assert entry["url"], (name, fname)
            # where the URL and hash come from: per file, or for the sheets once for the source
            assert entry.get("note") or name == "pddpm_splits", (name, fname)
            if entry.get("sha256"):
                assert re.fullmatch(r"[0-9a-f]{64}", entry["sha256"]), (name, fname)
            if entry.get("md5"):
                assert re.fullmatch(r"[0-9a-f]{32}", entry["md5"]), (name, fname)
    # six MSLUB archives of five patients, 16 sheets of the authors, each at the pinned commit
    assert list(sources["mslub"]["files"]) == [f"3D-MR-MS_patient{a:02d}-{a + 4:02d}.zip" for a in range(1, 30, 5)]
    sheets = sources["pddpm_splits"]["files"]
    assert len(sheets) == 16 and all(e["sha256"] for e in sheets.values())
    assert all(e["url"].endswith(f"/da14cd0bd894ef7766a35d4ba32bee67e7c354c3/Data/splits/{n}") for n, e in sheets.items())


def test_config_overrides_of_urls_and_hashes():
    over = {"urls": {"ixi/IXI.xls": "http://127.0.0.1/x", "mslub/3D-MR-MS_patient01-05.zip": ""},
            "md5": {"ixi/IXI.xls": "a" * 32}, "sha256": {"ixi/IXI-T2.tar": "b" * 64}}
    ixi = download.source_files("ixi", over)
    assert ixi["IXI.xls"]["url"] == "http://127.0.0.1/x"
    # a hash from the config replaces the pin of sources.yaml, whichever kind either is
    assert download.known_hash(ixi["IXI.xls"]) == "md5:" + "a" * 32
    assert download.known_hash(ixi["IXI-T2.tar"]) == "b" * 64
    # an empty URL: the file is to be put in place by hand
    assert download.missing_urls("mslub", over) == ["mslub/3D-MR-MS_patient01-05.zip"]
    assert download.missing_urls("mslub") == []


def test_stale_partial_longer_than_the_file_starts_over(server, tmp_path):
    body = _body(20_000)
    (tmp_path / ".p.zip.part").write_bytes(os.urandom(30_000))  # left by an older, bigger version
    url = server.serve("p.zip", body)
    download.fetch(url, tmp_path / "p.zip", _sha(body), retries=1, progressbar=False)
    assert (tmp_path / "p.zip").read_bytes() == body
    assert [r for _, r in server.requests] == ["bytes=30000-", None]  # 416, then from byte 0
