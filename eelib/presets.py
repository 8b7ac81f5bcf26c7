"""The model presets: SmolLM2-style Llama shapes at the paper's scales and at CPU sizes, as plain
data. Apart from eelib/model.py so that checking a params file (eelib/validate.py) and a batch's
parent process, which never build a model, need no torch or transformers (≈ 8 s of imports)."""
from __future__ import annotations

# vocab_size=None: taken from the tokenizer (the CPU presets use the byte tokenizer).
PRESETS: dict[str, dict] = {
    # The released HuggingFaceTB/SmolLM2-135M config (the paper prints no 135M architecture table, only Table 2's 1B one).
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                         tie_word_embeddings=True, rope_theta=100000.0, max_position_embeddings=8192,
                         rms_norm_eps=1e-5, initializer_range=576 ** -0.5),  # its init std, 1/sqrt(hidden)
    # Paper Table 2: 24 layers, hidden 1728, 27 heads MHA, MLP 4608, RoPE 1e5, untied; 1.03B params.
    "paper-1b": dict(hidden_size=1728, intermediate_size=4608, num_hidden_layers=24,
                     num_attention_heads=27, num_key_value_heads=27, vocab_size=49152,
                     tie_word_embeddings=False, rope_theta=100000.0, max_position_embeddings=8192,
                     rms_norm_eps=1e-5, initializer_range=0.02),  # init std not in Table 2: HF's default
    # CPU sizes (measured before the build: 23–29k tok/s at 0.59M params on 2 threads). Same family, same code path.
    "cpu-tiny": dict(hidden_size=128, intermediate_size=384, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=4, vocab_size=None,
                     tie_word_embeddings=True, rope_theta=100000.0, max_position_embeddings=2048,
                     rms_norm_eps=1e-5),
    "cpu-small": dict(hidden_size=192, intermediate_size=512, num_hidden_layers=4,
                      num_attention_heads=6, num_key_value_heads=6, vocab_size=None,
                      tie_word_embeddings=True, rope_theta=100000.0, max_position_embeddings=2048,
                      rms_norm_eps=1e-5),
    # For unit tests only: a few thousand parameters.
    "test-micro": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=2, vocab_size=None,
                       tie_word_embeddings=True, rope_theta=10000.0, max_position_embeddings=1024,
                       rms_norm_eps=1e-5),
}


# Stage keys name a preset, not its contents; so a change to what a preset builds bumps its
# revision here, which enters the keys (`preset_key`), or stages trained with the old contents
# would be reused. tests/test_stage_reuse.py pins each preset's contents to its revision.
# smollm2-135m r1: init std 1/sqrt(576), the released config's, instead of 0.02 (2026-11-27).
PRESET_REVISIONS = {"smollm2-135m": 1}


def preset_key(preset: str) -> str:
    """The preset as stage keys name it: the name, with its revision once it has one."""
    rev = PRESET_REVISIONS.get(preset, 0)
    return f"{preset}@r{rev}" if rev else preset
