#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Loads a Hugging Face directory written by `neox convert --to-hf` with
transformers' GPTNeoXForCausalLM (float32), runs `input_ids` of a
forward.safetensors file and prints the mean cross-entropy against its
`labels` over all positions (labels are not shifted) as the last line,
`loss <value>`.

Usage: hf_check.py HF_DIR FORWARD_SAFETENSORS
Exit status 0 on success; 3 when torch, transformers or safetensors cannot be
imported (the caller skips), 1 on any other error.
"""
import sys


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    hf_dir, forward = sys.argv[1], sys.argv[2]
    try:
        import torch
        import transformers
        from safetensors.torch import load_file
        from transformers import GPTNeoXForCausalLM
    except Exception as e:  # noqa: BLE001 - any import failure means "not available"
        print(f"missing python package: {e}", file=sys.stderr)
        return 3
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32, local_files_only=True)
    model.eval()
    cfg = model.config
    rotary = getattr(model.gpt_neox.layers[0].attention, "rotary_ndims", "?")
    print(f"config: layers {cfg.num_hidden_layers}, hidden {cfg.hidden_size}, heads {cfg.num_attention_heads}, "
          f"rotary_ndims {rotary}, parallel {cfg.use_parallel_residual}, tied {cfg.tie_word_embeddings}")
    data = load_file(forward)
    ids, labels = data["input_ids"].long(), data["labels"].long()
    labels = torch.where(labels < 0, torch.full_like(labels, -100), labels)  # neox ignores labels < 0
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float()
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                             ignore_index=-100)
    print(f"loss {loss.item():.10g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
