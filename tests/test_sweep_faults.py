"""Faults a sweep must survive: the driver SIGKILLed mid-sweep, trial workers killed from outside.

Both run ``python -m wbvb.sweep`` as a real process on a tiny config (sft trials, one at a time).
"""
import json
import os
import signal
import time

import pandas as pd
import pytest

from support.sweep_proc import alive, epochs, kill_group, results, start_sweep, wait_for, write_config

pytestmark = pytest.mark.e2e


@pytest.fixture
def fault_dict(tiny_dict, shared_teacher_dir):
    tiny_dict["teacher_data"]["path"] = str(shared_teacher_dir)
    tiny_dict["sweep"].update({"distill_types": ["sft"], "seeds": [0, 1], "max_concurrent_trials": 1,
                               "num_cpus": 2})
    return tiny_dict


def test_driver_sigkill_then_resume(fault_dict, tmp_path):
    EPOCHS = 2
    fault_dict["training"]["epochs"] = EPOCHS
    config = write_config(fault_dict, tmp_path / "sweep.yaml")
    run = tmp_path / "results" / "tiny"
    trials = {s: run / "tune" / f"sft-seed{s}" for s in (0, 1)}

    def finished_and_interrupted():
        done = [s for s, d in trials.items() if EPOCHS in epochs(d)]
        partial = [s for s, d in trials.items() if epochs(d) and EPOCHS not in epochs(d)
                   and list(d.glob("checkpoint_*"))]
        return (done[0], partial[0]) if done and partial else None

    log = tmp_path / "first.log"
    proc = start_sweep(config, log)
    try:
        done, partial = wait_for(finished_and_interrupted, proc, log, what="one finished and one checkpointed trial")
        os.kill(proc.pid, signal.SIGKILL)  # the driver only, as a pre-emption or the OOM killer would
        proc.wait(timeout=30)
        seen = {s: epochs(d) for s, d in trials.items()}
        worker = results(trials[partial])[-1]["pid"]
        deadline = time.time() + 60  # the driver's local Ray goes with it: no stray trial keeps writing
        while alive(worker) and time.time() < deadline:
            time.sleep(0.2)
        assert not alive(worker), "the interrupted trial's worker outlived the killed driver"
        assert {s: epochs(d) for s, d in trials.items()} == seen
    finally:
        kill_group(proc)
    assert seen[done] == list(range(1, EPOCHS + 1)) and EPOCHS not in seen[partial]
    finished_rows = (trials[done] / "result.json").read_text()

    log2 = tmp_path / "resume.log"
    proc = start_sweep(config, log2, "--resume")
    try:
        assert proc.wait(timeout=600) == 0, log2.read_text()[-4000:]
    finally:
        kill_group(proc)
    out = log2.read_text()
    assert "finishing only what is missing" in out
    assert (trials[done] / "result.json").read_text() == finished_rows  # not re-run
    # The interrupted trial continued after its last checkpointed epoch: no epoch ran twice.
    resumed = epochs(trials[partial])
    assert resumed == list(range(1, EPOCHS + 1)), resumed
    rows = results(trials[partial])
    assert rows[1]["pid"] != rows[0]["pid"]  # epoch 2 ran in the resumed sweep's new worker ...
    assert rows[1]["steps"] == 2 * rows[0]["steps"]  # ... with the optimizer step count restored, not restarted
    assert f"sft-seed{partial}/checkpoint_000000" in out  # Tune: "Restored ... from checkpoint"
    for s, d in trials.items():
        assert epochs(d)[-1] == EPOCHS, (s, epochs(d))
    summary = pd.read_csv(run / "results_summary.csv")
    final = summary[summary["epoch"] == EPOCHS]
    assert sorted(final["trial_name"]) == ["sft-seed0", "sft-seed1"]
    assert len(summary) == 2 * EPOCHS  # one row per (trial, epoch), nothing duplicated or lost


def test_killed_workers_are_retried_from_checkpoint_then_marked_failed(fault_dict, tmp_path):
    EPOCHS = 3
    fault_dict["training"]["epochs"] = EPOCHS
    fault_dict["sweep"]["max_failures"] = 1
    config = write_config(fault_dict, tmp_path / "sweep.yaml")
    run = tmp_path / "results" / "tiny"
    done, doomed = run / "tune" / "sft-seed0", run / "tune" / "sft-seed1"
    killed: list[int] = []

    def next_victim():  # seed 1's worker, each time it has reported from a process not yet killed
        rows = results(doomed)
        return rows[-1]["pid"] if rows and rows[-1]["pid"] not in killed else None

    log = tmp_path / "sweep.log"
    proc = start_sweep(config, log)
    try:
        while len(killed) < 2:  # the first kill is retried (max_failures 1), the second fails the trial
            pid = wait_for(next_victim, proc, log, what="a trial worker to kill")
            os.kill(pid, signal.SIGKILL)  # from outside, as the OOM killer would
            killed.append(pid)
        rc = proc.wait(timeout=600)
    finally:
        kill_group(proc)
    out = log.read_text()
    assert rc == 1, out[-4000:]  # a failed trial makes the sweep's exit status non-zero

    assert epochs(done) == list(range(1, EPOCHS + 1))
    # Retried once, from its epoch-1 checkpoint in a new process: epoch 2 follows, epoch 1 is not redone.
    rows = results(doomed)
    assert [r["epoch"] for r in rows] == [1, 2] and [r["pid"] for r in rows] == killed
    assert rows[1]["steps"] == 2 * rows[0]["steps"]  # optimizer state restored, not restarted
    # Killed again: past sweep.max_failures, so it is failed with its error; its epochs are kept.
    failed = json.loads((run / "failed_trials.json").read_text())["failed"]
    assert [f["trial"] for f in failed] == ["sft-seed1"]
    assert "actor died" in failed[0]["error"].lower(), failed[0]["error"]
    assert "trial sft-seed1 failed" in out and "left out of the tables" in out

    summary = pd.read_csv(run / "results_summary.csv")  # no finished result lost
    assert sorted(map(tuple, summary[["trial_name", "epoch"]].values.tolist())) == sorted(
        [("sft-seed0", e) for e in range(1, EPOCHS + 1)] + [("sft-seed1", 1), ("sft-seed1", 2)])
    agg = pd.read_csv(run / "aggregate.csv")
    assert set(agg.loc[agg["distill_type"] == "sft", "n"]) == {1}  # the failed trial's epoch 2 is no final result
    report = (run / "report.md").read_text()
    assert "**Failed**" in report and "sft-seed1" in report


def test_ctrl_c_leaves_trials_unfinished_and_the_sweep_exits_non_zero(fault_dict, tmp_path):
    fault_dict["training"]["epochs"] = 4  # far from done when the first epoch is reported
    config = write_config(fault_dict, tmp_path / "sweep.yaml")
    first = tmp_path / "results" / "tiny" / "tune" / "sft-seed0"
    log = tmp_path / "sweep.log"
    proc = start_sweep(config, log)
    try:
        wait_for(lambda: epochs(first), proc, log, what="the first trial's first epoch")
        os.kill(proc.pid, signal.SIGINT)  # Ctrl-C: Tune stops the trials gracefully and fit() returns
        rc = proc.wait(timeout=300)
    finally:
        kill_group(proc)
    out = log.read_text()
    assert rc == 130, out[-4000:]  # not 0: the sweep did not finish
    # seed 0 stopped mid-way, seed 1 never started (one trial at a time)
    assert "sweep: 2 of 2 trials unfinished (0 failed, 2 interrupted or not started)" in out, out[-4000:]
    assert max(epochs(first)) < 4
