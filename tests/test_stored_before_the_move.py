"""A run config written before the stage packages existed keeps its id; its teacher store is not silently reused.

``fixtures/premove/`` was written by the code before the layout move (commit 0cb170b): a tiny
store (two shards, top-k + hidden + attention) and ``premove.json`` with the config it was made
from, that config as the run saved it, and the run id it keyed its summary rows with. The run
config keeps its hash (keys added since, at their defaults, aside). The store is in format 3;
format 4 writes row groups of bounded size (an epoch reads rows in a uniformly random order), and
the fingerprint is now keyed on the train side of each task, so today's code neither reads that
store nor silently reuses it: it says so, writes a new one beside it, and leaves the old one as it was.
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
    # the default hidden loss changed (issue 19: scale-free cosine); a run saved with the old default
    # names mse, so resuming it with today's default is refused as another config, as it should be
    assert (saved["config_dict"]["loss"]["hidden_loss"], today["loss"]["hidden_loss"]) == ("mse", "cosine")
    today["loss"]["hidden_loss"] = "mse"
    assert today["models"].pop("add_bos") == "auto"  # added by the token-boundary fix, at its default
    assert today["sweep"].pop("gpu_memory_gb") == 0  # added with --plan, at its default
    assert today == saved["config_dict"]
    assert run_id_for(saved["config_dict"], "premove") == saved["run_id"]


def test_the_old_format_store_is_refused_and_replaced_with_a_message(tmp_path, capsys):
    import pytest

    from wbvb.config import config_from_dict
    from wbvb.store.schema import FORMAT_VERSION, TeacherDataError, read_manifest
    from wbvb.teacher.prepare import prepare

    saved = _saved()
    d = copy.deepcopy(saved["config"])
    d["models"]["cache_dir"] = str(tmp_path / "cache")
    d["teacher_data"]["path"] = str(tmp_path / "teacher")
    old = tmp_path / "teacher" / saved["fingerprint"]
    shutil.copytree(FIXTURE / "store", old)
    before = {p.name: p.read_bytes() for p in old.iterdir()}
    with pytest.raises(TeacherDataError, match=f"format version 3 is not {FORMAT_VERSION}; regenerate"):
        read_manifest(old)
    prep = prepare(config_from_dict(d))
    assert prep.manifest["fingerprint"] != saved["fingerprint"] and Path(prep.data_dir) != old
    assert prep.manifest["format_version"] == FORMAT_VERSION
    out = capsys.readouterr().out
    assert f"reusing {old}" not in out.replace(f"not reusing {old}", "")  # (its inputs differ: no same-inputs note)
    assert {p.name: p.read_bytes() for p in old.iterdir()} == before  # the old store is left as it was
    assert prep.manifest["num_rows"] == json.loads((old / "manifest.json").read_text())["num_rows"]  # same rows
    assert prep.manifest["inputs"]["add_bos"] == "auto"
