"""What a model costs before it is loaded: parameters, training memory and FLOPs from its config alone.

Both the sweep's ``--plan`` and the teacher stage's read it, so it sits with the models. A config
is read with ``AutoConfig`` (a local folder, the HF cache or a GGUF file; never the weights);
offline, the study's models fall back to architecture figures written here from their published
configs (``SHIPPED``), and the plan says so.

Memory model of one trial (full fine-tuning, AdamW, one process), in bytes:

* static: fp32 weights 4·P, fp32 grads 4·P, AdamW m and v 8·P (= 16·P). Under DeepSpeed with
  bf16/fp16: 2·P weights + 2·P grads on the GPU and 12·P optimizer state (fp32 master, m, v);
  ``offload_optimizer: cpu`` moves the optimizer state and fp32 grads (4·P) to the host,
  ``offload_param: cpu`` the weights too. ZeRO in one process partitions nothing.
* activations per decoder block and token, with ``a`` the compute element size (2 under autocast,
  4 in fp32) and 4 bytes for the residual stream and RMSNorm (kept in fp32): two norms of
  3·4·d each (input, normalised, scaled; under autocast plus an ``a``·d cast for the next linear),
  q/k/v after RoPE with k, v repeated to every head (3·a·d), the attention output and its
  contiguous copy (2·a·d), and the SwiGLU MLP (gate, SiLU, up, product: 4·a·i).
* logits: b·s·V·(a + 4 + 4) (lm_head output, its fp32 copy, the saved log-softmax); in fp32 the copy is free.
* white-box extras: the captured blocks' attention probabilities through the eager kernel
  (b·h·s²·(a + 4 + a) per block), the projector outputs (b·s·D_t·4 per pair, twice), and the teacher's
  hidden states and attention maps of one micro-batch (stored dtype and their fp32 copy).
* runtime: CUDA context and allocator slack on a GPU; the Python/torch process on the CPU.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from wbvb.config import ConfigError

GB = 1e9
CUDA_CONTEXT_BYTES = 1.5 * GB  # CUDA context + cuBLAS workspaces + allocator fragmentation
# A CPU trial's process apart from its model: imports (0.28 GB) plus what torch, tokenizers and evaluation
# hold once running; the peak RSS of the quickstart trial (145k parameters) measured here, 0.88 GB
# (benchmarks/plan_vs_measured.py).
CPU_PROCESS_BYTES = 0.85 * GB
DEFAULT_MFU = 0.3
CHARS_PER_TOKEN = 4.0  # English text through a 32k SentencePiece/BPE vocabulary, when no tokenizer is readable
PEAK_FLOPS = {"bf16": 312e12, "fp16": 312e12, "fp32": 19.5e12}  # A100 dense tensor-core / fp32 peak
CPU_CORE_FLOPS = 50e9  # fp32 per core (AVX2: 2 FMA units x 8 lanes x 2 FLOPs x ~1.5 GHz sustained)


@dataclass(frozen=True)
class ModelShape:
    """A decoder-only (Llama-style) causal LM's architecture: what memory and FLOPs follow from."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool
    source: str = ""  # where these figures came from (a config file, the HF cache, or shipped)

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def block_params(self) -> int:
        d, kv = self.hidden, self.kv_heads * self.head_dim
        return 2 * d * d + 2 * d * kv + 3 * d * self.intermediate + 2 * d  # q, o; k, v; gate, up, down; 2 norms

    @property
    def params(self) -> int:
        embed = self.vocab * self.hidden
        return self.layers * self.block_params + embed * (1 if self.tied else 2) + self.hidden

    def to_dict(self) -> dict:
        return asdict(self) | {"params": self.params}


def shape_of(config, source: str) -> ModelShape:
    """A ``ModelShape`` from an HF ``PretrainedConfig`` (Llama, Mistral, Qwen2 field names)."""
    heads = config.num_attention_heads
    return ModelShape(layers=config.num_hidden_layers, hidden=config.hidden_size,
                      intermediate=config.intermediate_size, heads=heads,
                      kv_heads=getattr(config, "num_key_value_heads", None) or heads, vocab=config.vocab_size,
                      tied=bool(getattr(config, "tie_word_embeddings", False)), source=source)


# Published configs (config.json of each release), for when no config is readable offline.
SHIPPED = {
    "llama-2-7b": ModelShape(32, 4096, 11008, 32, 32, 32000, False, "shipped: Llama-2-7B published config"),
    "tinyllama-1.1b": ModelShape(22, 2048, 5632, 32, 4, 32000, False, "shipped: TinyLlama-1.1B published config"),
    "smollm2-135m": ModelShape(30, 576, 1536, 9, 3, 49152, True, "shipped: SmolLM2-135M published config"),
}


def shipped_shape(name: str) -> ModelShape | None:
    key = name.lower().replace("_", "-")
    return next((s for k, s in SHIPPED.items() if k in key), None)


def read_shape(name: str) -> ModelShape:
    """The architecture of ``name``, no weights read: a local folder or GGUF file, the HF cache, the
    figures shipped here, then the hub's config.json."""
    from transformers import AutoConfig

    p = Path(name).expanduser()
    try:
        if p.is_file() and p.suffix == ".gguf":
            return shape_of(AutoConfig.from_pretrained(str(p.parent), gguf_file=p.name), f"config: {p}")
        if (p / "config.json").is_file():
            return shape_of(AutoConfig.from_pretrained(str(p)), f"config: {p / 'config.json'}")
        return shape_of(AutoConfig.from_pretrained(name, local_files_only=True), f"HF cache: {name}")
    except (OSError, ValueError):
        pass
    shipped = shipped_shape(name)
    if shipped is not None:
        return shipped
    try:  # the hub, when reachable: config.json alone
        return shape_of(AutoConfig.from_pretrained(name), f"hub: {name}")
    except (OSError, ValueError):
        raise ConfigError(f"cannot read the model config of '{name}' (offline?) and wbvb ships no figures for it; "
                          "give a local save_pretrained folder, or run once with the hub reachable") from None


# ---- memory ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class DeepSpeedPlan:
    """What a DeepSpeed JSON says about memory: stage, half-precision weights, offloads."""

    stage: int = 0
    half: bool = False
    offload_optimizer: bool = False
    offload_param: bool = False

    @classmethod
    def from_file(cls, path: str, cuda: bool) -> "DeepSpeedPlan":
        try:
            ds = json.loads(Path(path).expanduser().read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"training.deepspeed_config '{path}': cannot read it ({exc})") from exc
        z = ds.get("zero_optimization", {})

        def on(section):
            enabled = ds.get(section, {}).get("enabled", False)
            return cuda if enabled == "auto" else bool(enabled)

        def offloaded(key):
            return z.get(key, {}).get("device", "none") in ("cpu", "nvme")

        return cls(int(z.get("stage", 0)), on("bf16") or on("fp16"), offloaded("offload_optimizer"),
                   offloaded("offload_param"))


def static_terms(params: int, ds: DeepSpeedPlan | None) -> tuple[dict, dict]:
    """(device bytes, host bytes) of weights, gradients and optimizer state for ``params`` trained with AdamW."""
    if ds is None or not ds.half:
        dev = {"weights": 4 * params, "gradients": 4 * params, "optimizer": 8 * params}
    else:
        dev = {"weights": 2 * params, "gradients": 2 * params, "optimizer": 12 * params}
    host = {}
    if ds is not None and ds.offload_optimizer:
        host["optimizer"] = dev.pop("optimizer")
        if ds.half:
            host["fp32 gradients"] = 4 * params
    if ds is not None and ds.offload_param and ds.stage == 3:
        host["weights"] = dev.pop("weights")
    return dev, host


def block_activation_bytes(shape: ModelShape, tokens: int, autocast: bool) -> int:
    """Bytes one decoder block keeps for backward over ``tokens`` tokens (see the module docstring)."""
    a, d, i = (2 if autocast else 4), shape.hidden, shape.intermediate
    norms = 2 * (3 * 4 * d + (a * d if autocast else 0))
    return tokens * (norms + 3 * a * d + 2 * a * d + 4 * a * i)


def logits_bytes(shape: ModelShape, tokens: int, autocast: bool) -> int:
    a = 2 if autocast else 4
    return tokens * shape.vocab * (a + 4 + 4 if autocast else 8)


@dataclass(frozen=True)
class WhiteBox:
    """The white-box tensors of one trial: which student blocks are captured, what the teacher sends."""

    hidden_pairs: int = 0  # student blocks aligned to teacher hidden states (projector outputs)
    attention_pairs: int = 0  # student blocks whose attention probabilities are captured
    teacher_hidden: int = 0  # teacher hidden size
    teacher_heads: int = 0
    hidden_layers: int = 0  # teacher blocks stored in the store (all arrive per batch)
    attention_layers: int = 0
    hidden_stride: int = 1
    attention_stride: int = 1
    store_bytes: int = 2  # element size of the stored dtype


def whitebox_bytes(student: ModelShape, wb: WhiteBox, batch: int, seq: int, autocast: bool) -> dict:
    a = 2 if autocast else 4
    out = {}
    if wb.attention_pairs:
        out["captured attention"] = wb.attention_pairs * batch * student.heads * seq * seq * (a + 4 + a)
        n = math.ceil(seq / wb.attention_stride)
        out["teacher attention"] = wb.attention_layers * batch * wb.teacher_heads * n * n * (wb.store_bytes + 4)
    if wb.hidden_pairs:
        out["projector outputs"] = wb.hidden_pairs * batch * seq * wb.teacher_hidden * 4 * 2
        n = math.ceil(seq / wb.hidden_stride)
        out["teacher hidden"] = wb.hidden_layers * batch * n * wb.teacher_hidden * (wb.store_bytes + 4)
    return out


def training_memory(student: ModelShape, batch: int, seq: int, autocast: bool, cuda: bool,
                    ds: DeepSpeedPlan | None = None, wb: WhiteBox | None = None, extra_params: int = 0) -> dict:
    """{"device": {term: bytes}, "host": {term: bytes}} of one trial at micro-batch ``batch`` and ``seq`` tokens.

    ``device`` is the GPU on CUDA and the process's RAM on the CPU (where ``host`` adds to it)."""
    dev, host = static_terms(student.params + extra_params, ds)
    tokens = batch * seq
    dev["activations"] = student.layers * block_activation_bytes(student, tokens, autocast)
    dev["logits"] = logits_bytes(student, tokens, autocast)
    dev.update(whitebox_bytes(student, wb or WhiteBox(), batch, seq, autocast))
    dev["runtime"] = int(CUDA_CONTEXT_BYTES if cuda else CPU_PROCESS_BYTES)
    return {"device": dev, "host": host}


# ---- FLOPs -----------------------------------------------------------------------------------

def matmul_params(shape: ModelShape) -> int:
    """Parameters that take part in a matrix product: all but the input embedding (a lookup, unless
    tied to the output head) and the norms."""
    embed = 0 if shape.tied else shape.vocab * shape.hidden
    return shape.params - embed - shape.layers * 2 * shape.hidden - shape.hidden


def forward_flops(shape: ModelShape, tokens: int, seq: int) -> float:
    """2 FLOPs per matmul parameter and token, plus the causal attention scores and mix: QK^T and
    AV over on average s/2 keys, 2·L·s·d per token (a multiply-add counts 2)."""
    return 2.0 * matmul_params(shape) * tokens + 2.0 * shape.layers * seq * shape.hidden * tokens


def train_flops(shape: ModelShape, tokens: int, seq: int) -> float:
    """Forward + backward (twice the forward): ≈ 6·P·tokens."""
    return 3.0 * forward_flops(shape, tokens, seq)


def generate_flops(shape: ModelShape, prompt_tokens: int, new_tokens: int, seq: int) -> float:
    """Prefill of the prompts plus one forward token per generated token (KV cache)."""
    return forward_flops(shape, prompt_tokens + new_tokens, seq)


def peak_flops(cuda: bool, precision: str, cpus: float) -> float:
    """The peak a stage runs against: one A100 at ``precision``, or ``cpus`` cores."""
    return PEAK_FLOPS.get(precision, PEAK_FLOPS["fp32"]) if cuda else max(cpus, 1.0) * CPU_CORE_FLOPS


def seconds(flops: float, peak: float, mfu: float) -> float:
    return flops / (peak * mfu)
