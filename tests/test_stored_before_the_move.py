"""A teacher store and a run config written before the stage packages existed are still found.

``fixtures/premove/`` was written by the code before the layout move (commit 0cb170b): a tiny
store (two shards, top-k + hidden + attention) and ``premove.json`` with the config it was made
from, that config as the run saved it, and the run id it keyed its summary rows with. Reusing it
needed the same fingerprint and the same config hash from today's code.
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
    assert today["models"].pop("add_bos") == "auto"  # added by the token-boundary fix, at its default
    assert today == saved["config_dict"]
    assert run_id_for(saved["config_dict"], "premove") == saved["run_id"]


def test_the_old_store_is_not_reused_after_the_format_change(tmp_path, capsys):
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
    assert prep.manifest["inputs"]["format_version"] == 4 and prep.manifest["inputs"]["add_bos"] == "auto"
    assert Path(prep.data_dir) != store and Path(prep.data_dir).parent == store.parent
    assert f"reusing {store}" not in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in store.iterdir()} == before  # the old store left as it was
