"""wbvb: white-box vs black-box knowledge distillation, swept with Ray Tune."""
__version__ = "0.1.0"
