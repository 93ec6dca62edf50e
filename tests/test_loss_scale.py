"""The hidden loss on real-scale states, and the warning when one weighted term dwarfs another."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from tests.conftest import TINY
from wbvb.config import config_from_dict
from wbvb.train import losses


def test_the_default_hidden_loss_does_not_grow_with_the_states_scale():
    torch.manual_seed(0)
    s, t = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    mask = torch.ones(2, 5, dtype=torch.long)
    kind = config_from_dict(copy.deepcopy(TINY)).loss.hidden_loss
    small = losses.hidden_loss(s, t, None, mask, kind=kind).item()
    big = losses.hidden_loss(s, 300 * t, None, mask, kind=kind).item()  # a real LM's residual scale (rms ~300)
    assert big == pytest.approx(small, rel=1e-5)
    # cosine = half the MSE of both sides normalised as RMSNorm does (x / rms(x) per position)
    rms = lambda x: x / x.pow(2).mean(-1, keepdim=True).sqrt()  # noqa: E731
    assert small == pytest.approx(0.5 * (rms(s) - rms(t)).pow(2).mean().item(), rel=1e-5)


def test_scale_imbalance_names_terms_values_and_keys():
    why = losses.scale_imbalance({"task": 0.9, "kd": 1.2, "hidden": 3.8e3})
    assert "hidden term (3800)" in why and "task term (0.9)" in why and f"{3800 / 0.9:.3g}x" in why
    assert "loss.gamma_hidden" in why and "loss.alpha" in why and "loss.balancing=kd_magnitude" in why
    assert losses.scale_imbalance({"task": 1.0, "kd": 9.9}) == ""  # within 10x
    assert losses.scale_imbalance({"task": 1.0, "hidden": 0.0, "kd": math.nan}) == ""  # zero / nan terms ignored
    assert "kd term" in losses.scale_imbalance({"task": 0.05, "kd": 0.6})
