"""A trial's loss-scale warning reaches the sweep's log, though Ray's workers ignore warnings."""
import os
import subprocess
import sys


def test_loss_scale_warning_survives_the_workers_pythonwarnings_ignore():
    code = ("import warnings\n"
            "from wbvb.sweep.trial import _quiet_libraries\n"
            "from wbvb.train.trainer import LossScaleWarning\n"
            "warnings.warn('library noise', UserWarning)\n"
            "_quiet_libraries()\n"
            "warnings.warn('hidden_state trial (seed 0): out of scale', LossScaleWarning)\n")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}  # what RUNTIME_ENV gives every Ray worker
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert "out of scale" in out.stderr and "LossScaleWarning" in out.stderr
    assert "library noise" not in out.stderr
