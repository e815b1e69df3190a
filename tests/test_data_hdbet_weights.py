"""HD-BET v2's weights: unpacked by rule hdbet_weights from its archive in the real layout, checked
before the skull-strip job uses them, and handed to HD-BET without any download."""

from __future__ import annotations

import hashlib
import logging
import sys
import textwrap

import nibabel as nib
import numpy as np
import pytest

from data_fixtures import hdbet_weights_zip, nifti, zip_of
from pddpm.errors import PddpmInputError
from pddpm.preprocess import skullstrip


@pytest.mark.parametrize("wrapped", [False, True])
def test_weights_archive_unpacked_into_the_folder(tmp_path, caplog, wrapped):
    archive = hdbet_weights_zip(tmp_path, wrapped=wrapped)
    ckpt = (tmp_path / "hdbet_src" / ("release_2.0.0" if wrapped else "") / "fold_all/checkpoint_final.pth")
    members = {"fold_all/checkpoint_final.pth": {"sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest()}}
    folder = tmp_path / "resources/weights/hdbet_v2"
    with caplog.at_level(logging.INFO, logger="pddpm.preprocess"):
        assert skullstrip.install_hdbet_v2_weights(archive, folder, members) == folder
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == sorted(
        skullstrip.HDBET_V2_FILES)
    assert (folder / "fold_all/checkpoint_final.pth").read_bytes() == ckpt.read_bytes()
    assert "as pinned" in caplog.text
    assert sorted(p.name for p in folder.parent.iterdir()) == ["hdbet_v2"]  # no unpack folder left
    # another checkpoint than the third-party pin: logged, not fatal (that pin is unverified)
    caplog.clear()
    skullstrip.install_hdbet_v2_weights(archive, folder, {"fold_all/checkpoint_final.pth": {"sha256": "0" * 64}})
    assert "differs from the third-party pin" in caplog.text


def test_weights_archive_without_checkpoint_is_refused(tmp_path):
    src = tmp_path / "src"
    (src / "fold_all").mkdir(parents=True)
    (src / "dataset.json").write_text("{}")
    (src / "plans.json").write_text("{}")
    archive = zip_of(src, tmp_path / "release_v1.5.0.zip")
    folder = tmp_path / "w" / "hdbet_v2"
    with pytest.raises(PddpmInputError, match=r"release_v1.5.0.zip: no dataset.json, plans.json, "
                                              r"fold_all/checkpoint_final.pth in it"):
        skullstrip.install_hdbet_v2_weights(archive, folder)
    assert not folder.parent.exists() or not any(folder.parent.iterdir())


def test_incomplete_weights_folder_says_how_to_fetch(tmp_path):
    with pytest.raises(PddpmInputError, match="got no weights folder.*download_all"):
        skullstrip.check_hdbet_v2_weights(None)
    folder = tmp_path / "w"
    (folder / "fold_all").mkdir(parents=True)
    (folder / "dataset.json").write_text("{}")
    with pytest.raises(PddpmInputError) as err:
        skullstrip.check_hdbet_v2_weights(folder)
    msg = str(err.value)
    assert str(folder) in msg and "no plans.json, fold_all/checkpoint_final.pth" in msg
    assert "download_all" in msg and "preprocess.skullstrip.weights_dir" in msg


# HD-BET 2.0.1's own modules, reduced to what decides where its weights are read from (as in its sdist):
# paths.py fixes the folder under ~, hd_bet_prediction.py imports that name and get_hdbet_predictor
# reads it when called; the download lives in checkpoint_download.py, called only by its CLI. The stand-in
# predictor writes a brain mask (a ball) where hdbet_predict's real one would.
HD_BET_STANDIN = {
    "__init__.py": "",
    "paths.py": """
        import os
        folder_with_parameter_files = os.path.join(os.path.expanduser('~'), 'hd-bet_params', 'release_2.0.0')
        ZENODO_DOWNLOAD_URL = 'http://127.0.0.1:9/never'
    """,
    "checkpoint_download.py": """
        def maybe_download_parameters():
            raise AssertionError("HD-BET's download was called")
    """,
    "hd_bet_prediction.py": """
        import nibabel as nib
        import numpy as np
        from HD_BET.paths import folder_with_parameter_files
        CALLS = []

        def get_hdbet_predictor(use_tta=False, device=None, verbose=False):
            CALLS.append(folder_with_parameter_files)
            return ("predictor", folder_with_parameter_files)

        def hdbet_predict(inp, out, predictor, keep_brain_mask=False, compute_brain_extracted_image=True):
            img = nib.load(inp)
            g = np.indices(img.shape[:3]) - (np.array(img.shape[:3]) // 2)[:, None, None, None]
            mask = ((g ** 2).sum(0) <= (min(img.shape[:3]) // 3) ** 2).astype(np.uint8)
            nib.save(nib.Nifti1Image(mask, img.affine), out[:-7] + "_bet.nii.gz")
    """,
}


def test_hdbet_v2_reads_the_weights_folder_it_is_given(tmp_path, monkeypatch):
    pkg = tmp_path / "site" / "HD_BET"
    pkg.mkdir(parents=True)
    for name, text in HD_BET_STANDIN.items():
        (pkg / name).write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for mod in [m for m in sys.modules if m == "HD_BET" or m.startswith("HD_BET.")]:
        monkeypatch.delitem(sys.modules, mod)
    folder = tmp_path / "weights"
    for f in skullstrip.HDBET_V2_FILES:
        (folder / f).parent.mkdir(parents=True, exist_ok=True)
        (folder / f).write_bytes(b"x")
    path = nifti(tmp_path / "t2.nii.gz", shape=(20, 20, 20), affine=np.diag([1.0, 1.0, 1.0, 1.0]))
    mask = skullstrip.mask_hdbet_v2(path, weights_dir=folder, device="cpu")
    from HD_BET import hd_bet_prediction

    assert hd_bet_prediction.CALLS == [str(folder)]  # not ~/hd-bet_params/release_2.0.0
    assert mask.shape == nib.load(path).shape and 0 < mask.sum() < mask.size
    assert not (tmp_path / "home").exists()  # nothing written to the home folder
