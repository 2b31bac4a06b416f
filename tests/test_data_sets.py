"""Training on several prepared sets (`--data A B`): each keeps its own held-out split, and config.json says which
sets, how many rows each, and what was held out."""

import json
from collections import Counter
from pathlib import Path

import pytest

from eye2face_hub.ages import age_band

from .paths import REPO
from .training_run import train
from .utkface import utkface_sample  # noqa: F401  (a fixture)


@pytest.fixture(scope="module")
def utkface_pairs(utkface_sample, tmp_path_factory):  # noqa: F811
    """UTKFace pairs with a validation split (prepare --val-photos)."""
    from eye2face_hub.data import prepare

    out = tmp_path_factory.mktemp("aged") / "pairs"  # a name that does not say UTKFace: the card must tell by the photos
    pairs, _ = prepare(str(utkface_sample), str(out), val_photos=15)
    assert len(pairs["train"]) >= 2 and len(pairs["validation"]) >= 1
    return out


def test_each_set_holds_out_its_own_split(prepared_pairs, utkface_pairs, tmp_path):
    from train_accelerate import parse_args, split_rows

    from eye2face_hub.data import held_out_split, load_pairs

    args = parse_args(["--data", str(prepared_pairs), str(utkface_pairs), "--output-dir", str(tmp_path), "--val-split", "3"])
    train_rows, val_rows = split_rows(args)
    celeba, utk, utk_val = (list(rows["source"]) for rows in (
        load_pairs(str(prepared_pairs)), load_pairs(str(utkface_pairs)), held_out_split(str(utkface_pairs))))
    assert held_out_split(str(prepared_pairs)) is None
    # CelebA: its last 3 rows held out; UTKFace: its validation split, all of its train split trained on
    assert list(train_rows["source"]) == celeba[:-3] + utk
    assert list(val_rows["source"]) == celeba[-3:] + utk_val
    assert not set(train_rows["source"]) & set(val_rows["source"])
    ages = Counter(age_band(int(Path(name).name.split("_")[0])) for name in utk)  # UTKFace names start with the age
    assert args.data_sets == [
        {"data": str(prepared_pairs), "train_rows": len(celeba) - 3, "val_rows": 3, "validation": "its last 3 rows"},
        {"data": str(utkface_pairs), "train_rows": len(utk), "val_rows": len(utk_val),
         "validation": "its validation split (prepare --val-photos)",
         "train_rows_by_age_band": {band: ages[band] for band in ("0-12", "13-59", "60+") if ages[band]}},
    ]


@pytest.mark.slow
def test_config_records_the_sets(prepared_pairs, utkface_pairs, tmp_path):
    train(prepared_pairs, tmp_path, "--data", str(prepared_pairs), str(utkface_pairs), "--preset", "l1",
          "--batch-size", "4", "--max-steps", "2", "--val-split", "2")
    training = json.loads((tmp_path / "config.json").read_text())["training"]
    sets = training["stages"][-1]["data"]
    assert [s["data"] for s in sets] == [str(prepared_pairs), str(utkface_pairs)]
    assert training["args"]["data"] == [str(prepared_pairs), str(utkface_pairs)] and "data_sets" not in training["args"]
    assert sum(s["train_rows"] for s in sets) * 2 == training["train_pairs"]  # one-eye model: two pairs a photo
    assert sum(s["val_rows"] for s in sets) * 2 == training["val_pairs"]
    # The model card names both data sets, UTKFace's licence and its training photos by age band; CelebA has no ages.
    card = (tmp_path / "README.md").read_text()
    assert "- celeba\n- utkface\n" in card and "UTKFace is also for **non-commercial research only**" in card
    utk = sets[1]["train_rows_by_age_band"]
    assert "train_rows_by_age_band" not in sets[0] and sum(utk.values()) == sets[1]["train_rows"]
    assert ", ".join(f"{band} {n}" for band, n in utk.items()) in card


def test_a_card_names_utkface_only_for_a_model_trained_on_it_and_its_model_after_its_folder(tmp_path):
    from eye2face_hub import load_generator

    for name, trained_on_utkface in [("weights/eye2face-two-eyes-id", False), ("weights/eye2face-two-eyes-id-allages", True)]:
        config = json.loads((REPO / name / "config.json").read_text())
        out = tmp_path / name
        load_generator(REPO / name).save_pretrained(out, model_card_kwargs={
            "loss_config": config["loss_config"], "training": config["training"], "sample_grid": False})
        card = (out / "README.md").read_text()
        assert ("- utkface" in card) == trained_on_utkface and ("UTKFace is also for" in card) == trained_on_utkface
        # its validation metrics are over both sets' held-out photos
        assert ("name: CelebA and UTKFace, held-out validation photos" in card) == trained_on_utkface
        # its model-index is named after its folder (a Hub repo's name), so the two are told apart
        assert f"- name: {out.name}\n" in card and f"- name: {out.name}\n" in (REPO / name / "README.md").read_text()
