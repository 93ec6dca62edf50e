"""A run config written before the stage packages existed keeps its id; its teacher store is not silently reused.

``fixtures/premove/`` was written by the code before the layout move (commit 0cb170b): a tiny
store (two shards, top-k + hidden + attention) and ``premove.json`` with the config it was made
from, that config as the run saved it, and the run id it keyed its summary rows with. The run
config keeps its hash (keys added since, at their defaults, aside). The store's fingerprint has
changed since (it is keyed on the train side of each task, issue 19), so that store is not
reused: a new one is made beside it, and the old one is left as it was.
"""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

FIXTURE = Path(__file__).parent / "fixtures" / "premove"


def _saved() -> dict:
    return json.loads((FIXTURE / "premove.json").read_text())


def test_the_run_config_and_its_id_are_unchanged():
    from wbvb.analysis.results import run_id_for
    from wbvb.config import config_from_dict

    saved = _saved()
    today = config_from_dict(copy.deepcopy(saved["config"])).to_dict()
    assert today["teacher_data"].pop("threads") == 0  # added since (issue 19), at its default
    assert today == saved["config_dict"]
    assert run_id_for(saved["config_dict"], "premove") == saved["run_id"]


def test_the_old_store_is_left_alone_and_a_new_one_made_beside_it(tmp_path, capsys):
    from wbvb.config import config_from_dict
    from wbvb.teacher.prepare import prepare

    saved = _saved()
    d = copy.deepcopy(saved["config"])
    d["models"]["cache_dir"] = str(tmp_path / "cache")
    d["teacher_data"]["path"] = str(tmp_path / "teacher")
    store = tmp_path / "teacher" / saved["fingerprint"]
    shutil.copytree(FIXTURE / "store", store)
    before = {p.name: p.read_bytes() for p in store.iterdir()}
    prep = prepare(config_from_dict(d))
    assert prep.manifest["fingerprint"] != saved["fingerprint"]
    assert Path(prep.data_dir).parent == store.parent and Path(prep.data_dir) != store
    assert prep.manifest["complete"] and prep.manifest["num_rows"] == json.loads(
        (store / "manifest.json").read_text())["num_rows"]  # the same train rows, stored anew
    assert "reusing" not in capsys.readouterr().out.split("teacher eval")[0]
    assert {p.name: p.read_bytes() for p in store.iterdir()} == before  # the old store untouched
