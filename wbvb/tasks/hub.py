"""Task splits from the Hugging Face hub through the optional ``datasets`` library.

Imported lazily: wbvb runs without it (``pip install 'wbvb[hub]'`` adds it), and an offline
machine gets an error that says to use the local files instead.
"""
from __future__ import annotations

from wbvb.tasks.files import TaskDataError


def _load_dataset(name: str, config: str, split: str):
    try:
        import datasets
    except ImportError as exc:
        raise TaskDataError(f"source: hub needs the 'datasets' library to read {name}; install it with "
                            "pip install 'wbvb[hub]', or use source: local with the original files") from exc
    return datasets.load_dataset(name, config or None, split=split)


def load_split(name: str, config: str, split: str) -> list[tuple[dict, str]]:
    """Rows of one hub split, each with an origin like ``hub cais/mmlu/all[test] row 7``."""
    where = f"hub {name}{'/' + config if config else ''}[{split}]"
    try:
        ds = _load_dataset(name, config, split)
    except TaskDataError:
        raise
    except Exception as exc:  # network, auth, unknown name/config/split: all end here
        raise TaskDataError(f"{where}: cannot load ({type(exc).__name__}: {exc}); offline? use source: local "
                            "with the original files (tasks[].path), or fix tasks[].hub_name/hub_config") from exc
    return [(dict(row), f"{where} row {i}") for i, row in enumerate(ds)]
