#!/usr/bin/env python3
"""Write a random-weight Qwen3 model of a realistic shape for GPU throughput runs.

Speed depends on a model's shape, not on its weights, so a lent GPU machine without internet
access can serve a model as large as a real one: this writes config.json, a bf16
model.safetensors and a tokenizer whose vocabulary has the real size (the tiny test BPE of
tests/fixtures/make_models.py, padded with added tokens, so every id the model samples decodes).
Needs numpy and tokenizers only.

Usage: gpu-model.py OUT [--shape qwen3-0.6b|qwen3-1.7b|qwen3-4b|qwen3-8b|tiny]
"""
import argparse
import json
import os
import struct
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "fixtures"))
import make_models  # noqa: E402  (the tokenizer, chat template and config layout of the tests)

# hidden, intermediate, layers, heads, kv heads, head dim, vocabulary: Qwen3's published shapes.
SHAPES = {
    "tiny": (64, 128, 2, 4, 2, 16, 1024),
    "qwen3-0.6b": (1024, 3072, 28, 16, 8, 128, 151936),
    "qwen3-1.7b": (2048, 6144, 28, 16, 8, 128, 151936),
    "qwen3-4b": (2560, 9728, 36, 32, 8, 128, 151936),
    "qwen3-8b": (4096, 12288, 36, 32, 8, 128, 151936),
}


def tensor_shapes(hidden, inter, layers, heads, kv_heads, head_dim, vocab):
    yield "model.embed_tokens.weight", (vocab, hidden)
    yield "model.norm.weight", (hidden,)
    for n in range(layers):
        p = f"model.layers.{n}."
        yield p + "input_layernorm.weight", (hidden,)
        yield p + "post_attention_layernorm.weight", (hidden,)
        yield p + "self_attn.q_proj.weight", (heads * head_dim, hidden)
        yield p + "self_attn.k_proj.weight", (kv_heads * head_dim, hidden)
        yield p + "self_attn.v_proj.weight", (kv_heads * head_dim, hidden)
        yield p + "self_attn.o_proj.weight", (hidden, heads * head_dim)
        yield p + "self_attn.q_norm.weight", (head_dim,)
        yield p + "self_attn.k_norm.weight", (head_dim,)
        yield p + "mlp.gate_proj.weight", (inter, hidden)
        yield p + "mlp.up_proj.weight", (inter, hidden)
        yield p + "mlp.down_proj.weight", (hidden, inter)
    yield "lm_head.weight", (vocab, hidden)


def bf16(values):
    """float32 -> bf16 bits (round to nearest even), as uint16."""
    bits = values.astype(np.float32).view(np.uint32)
    rounded = bits + 0x7FFF + ((bits >> 16) & 1)
    return (rounded >> 16).astype(np.uint16)


def write_safetensors(path, shapes, seed):
    """Stream a bf16 safetensors file tensor by tensor (never the whole model in memory)."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in shapes:
        size = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name, shape in shapes:
            if name.endswith("norm.weight"):
                values = np.ones(shape, np.float32)
            else:
                scale = 0.5 if name == "lm_head.weight" else 0.02
                values = scale * rng.standard_normal(shape, dtype=np.float32)
            f.write(bf16(values).tobytes())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--shape", default="qwen3-0.6b", choices=sorted(SHAPES))
    parser.add_argument("--ctx", type=int, default=8192, help="max_position_embeddings")
    args = parser.parse_args()
    hidden, inter, layers, heads, kv_heads, head_dim, vocab = SHAPES[args.shape]

    tok = make_models.bpe_tokenizer()
    missing = vocab - tok.get_vocab_size()
    if missing > 0:
        tok.add_tokens([f"<w{i}>" for i in range(missing)])
    assert tok.get_vocab_size() == vocab, (tok.get_vocab_size(), vocab)

    os.makedirs(args.out, exist_ok=True)
    make_models.SHAPE.update(hidden=hidden, inter=inter, layers=layers, heads=heads,
                             kv_heads=kv_heads, head_dim=head_dim, ctx=args.ctx)
    config = make_models.hf_config("Qwen3ForCausalLM", tok, tie_word_embeddings=False,
                                   **make_models.qwen3_extra())
    config["torch_dtype"] = "bfloat16"
    make_models.write_json(os.path.join(args.out, "config.json"), config)
    make_models.write_tokenizer_files(args.out, tok)
    shapes = list(tensor_shapes(hidden, inter, layers, heads, kv_heads, head_dim, vocab))
    write_safetensors(os.path.join(args.out, "model.safetensors"), shapes, seed=7)
    params = sum(int(np.prod(s)) for _, s in shapes)
    print(f"{args.out}: {args.shape}, {params / 1e9:.2f}B parameters, vocabulary {vocab}")


if __name__ == "__main__":
    main()
