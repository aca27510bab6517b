"""A missing dataset folder is one line: where it was looked for (once), the layout, where the data comes from."""

from __future__ import annotations

import pytest

from mtlzoo import DataError


@pytest.mark.parametrize(
    "config, source",
    [
        ("nyuv2/mtan.yaml", "MTAN's preprocessed NYUv2 (288x384), linked from github.com/lorenmt/mtan"),
        (
            "cityscapes/mtan.yaml",
            "MTAN's preprocessed Cityscapes (128x256), linked from github.com/lorenmt/mtan",
        ),
    ],
)
def test_a_missing_npy_dataset_names_its_folder_once_its_layout_and_its_source(
    zoo, root, tmp_path, config, source
):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as err:
        zoo.build(root / "configs" / config, [f"data.root={missing}"])
    text = str(err.value)
    assert "\n" not in text and text.count(str(missing)) == 1
    name = config.split("/")[0]
    assert text.startswith(
        f"{name}: no data folder at {missing} (data.root); it takes the MTAN/LibMTL .npy layout"
    )
    assert f"download {source}" in text and text.endswith("and set data.root to its folder")
    assert "train/ and val/, each with image/," in text


def test_a_relative_data_root_is_shown_resolved_once(zoo, root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as err:
        zoo.build(root / "configs" / "nyuv2" / "mtan.yaml", ["data.root=data/nyuv2"])
    assert f"no data folder at {tmp_path / 'data' / 'nyuv2'} (data.root)" in str(err.value)
    assert str(err.value).count("data/nyuv2") == 1
