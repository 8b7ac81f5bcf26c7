"""SmolLM2-style models (transformers Llama) at the paper's scales and at CPU sizes.

The paper trains everything from scratch (notes §2), so a preset is a `LlamaConfig`, never a hub
checkpoint. Dropout on embeddings / attention / residual / MLP is the paper's stage-2 intervention
(§4.4); stock `LlamaConfig` has attention dropout only, so the other three are forward hooks that
this module adds and removes (`set_dropout`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, LlamaConfig, LlamaForCausalLM
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from eelib.config import RESIDUAL_STREAMS
from eelib.presets import PRESETS  # plain data, apart so that validation needs no torch

# Attention: torch's SDPA told `is_causal=True`, with no mask tensor (a speed choice; the paper is
# silent). Stock "sdpa" in transformers 5.17 (the GPU image's, 2026-11-28) builds an explicit T × T
# causal mask whenever dynamo traces, so a compiled step hands SDPA `attn_mask=`: cuDNN then works
# through the masked upper half too, and the flash kernel refuses to run at all ("No viable
# backend", H100). eelib never pads a sequence (rows are full windows of the token stream; a short
# compiled last batch gets whole extra rows whose targets are ignored, loss.py), so its mask is
# always the plain causal one and the flag says it. No mask function is registered under this
# name, so transformers builds no mask and passes `attention_mask=None`; a caller's padding mask
# would be dropped, which is why only eelib's own models use it (`build_model`).
CAUSAL_SDPA = "eelib_causal_sdpa"


def _causal_sdpa(module, query, key, value, attention_mask, **kwargs):
    kwargs.pop("is_causal", None)
    return sdpa_attention_forward(module, query, key, value, None, is_causal=True, **kwargs)


AttentionInterface.register(CAUSAL_SDPA, _causal_sdpa)


def llama_config(preset: str, vocab_size: int, attention: str = CAUSAL_SDPA) -> LlamaConfig:
    kw = dict(PRESETS[preset])
    kw.setdefault("initializer_range", 0.02)  # the CPU presets: transformers' default init std
    if kw["vocab_size"] is None:
        kw["vocab_size"] = vocab_size
    elif kw["vocab_size"] < vocab_size:
        raise ValueError(f"model preset {preset!r} has vocab {kw['vocab_size']} < tokenizer's {vocab_size}")
    return LlamaConfig(attention_dropout=0.0, hidden_act="silu", attn_implementation=attention,
                       bos_token_id=None, eos_token_id=None, pad_token_id=None, **kw)


def build_model(preset: str, vocab_size: int, seed: int, attention: str = CAUSAL_SDPA,
                stream: str = "fp32") -> LlamaForCausalLM:
    """A freshly initialised model; `seed` alone fixes its weights. `attention="sdpa"` gives stock
    transformers attention (the plain baseline of benchmarks/throughput.py). `stream`: the
    residual stream's dtype under autocast (`set_residual_stream`)."""
    cfg = llama_config(preset, vocab_size, attention)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg)
    set_residual_stream(model, stream)
    return model


# ---------------------------------------------------------------------------------------------
# The residual stream's dtype (issue 5; the paper says only "bf16-mixed", Table 5). Under bf16
# autocast, transformers' Llama keeps the stream in the weights' dtype: the embedding's output is
# fp32 (a lookup, not an autocast op), each block adds its bf16 output to it in fp32, and every
# norm input, RoPE table and residual add is fp32. "bf16" casts the embedding's output to the
# autocast dtype, so the stream and the RoPE tables (built in the input's dtype) are bf16: half
# the bytes through every residual add and norm, while the weights and AdamW stay fp32 (the
# master copy) and the norms still compute in fp32 inside. Megatron-LM's
# `--fp32-residual-connection` is off by default, i.e. a bf16 stream is its default in bf16
# training. Without autocast (eelib's CPU runs) the hook does nothing, so CPU numbers are the
# same either way.
def _stream_hook(module, args, output):
    dev = output.device.type
    if torch.is_autocast_enabled(dev):
        return output.to(torch.get_autocast_dtype(dev))
    return output


def set_residual_stream(model: LlamaForCausalLM, stream: str) -> None:
    """Keep the residual stream in fp32 (transformers' behaviour) or in the autocast dtype."""
    if stream not in RESIDUAL_STREAMS:
        raise ValueError(f"residual stream must be one of {RESIDUAL_STREAMS}, got {stream!r}")
    handle = getattr(model, "_eelib_stream_hook", None)
    if handle is not None:
        handle.remove()
    model._eelib_stream_hook = None
    if stream == "bf16":
        embed = model.get_input_embeddings()
        model._eelib_stream_hook = embed.register_forward_hook(_stream_hook)
    model._eelib_stream = stream


def base_model(model):
    """The LlamaForCausalLM inside a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def residual_stream(model) -> str:
    """The stream `set_residual_stream` gave this model (or the model inside a peft wrapper)."""
    return getattr(base_model(model), "_eelib_stream", "fp32")


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# Stage-2 dropout (§4.4: "embed/attn/resid/mlp"). One rate p for all four places:
#   embed: on the token embeddings;  attn: on attention probabilities (LlamaConfig.attention_dropout);
#   resid: on each block's output before it is added to the residual stream (o_proj, down_proj);
#   mlp:   inside the MLP, on the activations entering down_proj.

def _out_hook(p):
    def hook(module, args, output):
        return F.dropout(output, p, module.training)
    return hook


def _in_hook(p):
    def hook(module, args):
        return (F.dropout(args[0], p, module.training),) + tuple(args[1:])
    return hook


def set_dropout(model: LlamaForCausalLM, p: float) -> None:
    """Install (p > 0) or remove (p == 0) the four dropouts; idempotent."""
    for h in getattr(model, "_eelib_dropout_hooks", []):
        h.remove()
    model._eelib_dropout_hooks = []
    base = base_model(model)
    inner = base.model
    inner.config.attention_dropout = p
    for layer in inner.layers:
        layer.self_attn.attention_dropout = p
    if p <= 0:
        return
    hooks = [inner.embed_tokens.register_forward_hook(_out_hook(p))]
    for layer in inner.layers:
        hooks.append(layer.self_attn.o_proj.register_forward_hook(_out_hook(p)))
        hooks.append(layer.mlp.down_proj.register_forward_hook(_out_hook(p)))
        hooks.append(layer.mlp.down_proj.register_forward_pre_hook(_in_hook(p)))
    model._eelib_dropout_hooks = hooks


# ---------------------------------------------------------------------------------------------
# Stage-2 LoRA (App., Table 9): r=64, α=128, targets "projection, mlp, head" with Q/K/V excluded.
LORA_TARGETS = ["o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"]


def lora_targets(model: LlamaForCausalLM) -> list[str]:
    # A tied head *is* the embedding matrix: an adapter on it, once merged, would silently change
    # the input embeddings too. So with tied embeddings (SmolLM2-135M, CPU presets) the head is left
    # out; the untied paper-1b gets it (docs/decisions.md).
    if model.config.tie_word_embeddings:
        return [t for t in LORA_TARGETS if t != "lm_head"]
    return LORA_TARGETS


def add_lora(model: LlamaForCausalLM, r: int, alpha: int, dropout: float, seed: int):
    """Adapters initialised from `seed`, not from whatever the process drew before (stage 1 in
    the same process, earlier runs of a grid), so a stage-2 key means one set of numbers."""
    from peft import LoraConfig, get_peft_model
    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=lora_targets(model),
                     bias="none", task_type="CAUSAL_LM")
    with torch.random.fork_rng(devices=[]):  # leaves the caller's random state as it was
        torch.manual_seed(seed)
        return get_peft_model(model, cfg)


def merge_lora(model):
    """Fold the adapters into the weights: stage 3 fine-tunes the full merged model."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
