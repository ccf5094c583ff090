#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""The yardstick of `neox bench train`: one training step of Hugging Face
transformers' GPTNeoXForCausalLM in PyTorch, as a user would run it.

bf16 autocast, SDPA attention, fused AdamW, gradient clipping, random tokens.
Prints tokens/s, MFU (PaLM formula: 6N + 12 L H Q T per token, N without the
input embedding) and peak GPU memory, in the same shape as `neox bench train`.

    python3 packaging/bench/pytorch_baseline.py --shape pythia-160m [--compile]
    python3 packaging/bench/pytorch_baseline.py --shape pythia-1.4b

Needs torch and transformers (the GPU machine's image has both). On a machine
without a GPU it runs on the CPU (for checking the script, not for figures).
"""
import argparse
import statistics
import sys
import time

import torch

SHAPES = {
    # name: layers, hidden, heads, rotary_pct, vocab, seq, micro-batch
    "pythia-160m": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, rotary_pct=0.25,
                        vocab_size=50304, seq=2048, batch=16),
    "pythia-410m": dict(num_hidden_layers=24, hidden_size=1024, num_attention_heads=16, rotary_pct=0.25,
                        vocab_size=50304, seq=2048, batch=16),
    "pythia-1.4b": dict(num_hidden_layers=24, hidden_size=2048, num_attention_heads=16, rotary_pct=0.25,
                        vocab_size=50304, seq=2048, batch=8),
    "tiny": dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, rotary_pct=0.25,
                 vocab_size=512, seq=64, batch=2),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="pythia-160m")
    ap.add_argument("--batch", type=int, help="micro-batch (default: the shape's)")
    ap.add_argument("--seq", type=int, help="sequence length (default: the shape's)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="device peak for MFU (H100/H200 dense bf16)")
    args = ap.parse_args()

    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    s = dict(SHAPES[args.shape])
    seq, batch = args.seq or s.pop("seq"), args.batch or s.pop("batch")
    s.pop("seq", None)
    s.pop("batch", None)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    cfg = GPTNeoXConfig(**s, intermediate_size=4 * s["hidden_size"], max_position_embeddings=seq,
                        use_parallel_residual=True, tie_word_embeddings=False, hidden_dropout=0.0,
                        attention_dropout=0.0)
    try:
        cfg._attn_implementation = "sdpa"
        model = GPTNeoXForCausalLM(cfg)
    except Exception:  # old transformers/torch without SDPA: eager attention
        cfg._attn_implementation = "eager"
        model = GPTNeoXForCausalLM(cfg)
    model = model.to(device)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    opt_kwargs = dict(lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.01)
    try:
        opt = torch.optim.AdamW(model.parameters(), fused=cuda, **opt_kwargs)
    except TypeError:
        opt = torch.optim.AdamW(model.parameters(), **opt_kwargs)
    step_model = torch.compile(model) if args.compile else model

    g = torch.Generator(device="cpu").manual_seed(1234)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq), generator=g).to(device)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            loss = step_model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    for _ in range(args.warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    loss = None
    for _ in range(args.steps):
        t0 = time.perf_counter()
        loss = step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    tokens = batch * seq
    L, H, V = cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size
    n_no_embed = n_params - V * H  # the input embedding is a lookup; the output layer is a matmul
    flops_per_token = 6 * n_no_embed + 12 * L * H * seq
    tps = tokens / step_s
    mfu = flops_per_token * tps / (args.peak_tflops * 1e12)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    name = torch.cuda.get_device_name() if cuda else "cpu"
    print(f"device:      {name}")
    print(f"versions:    torch {torch.__version__}, transformers {__import__('transformers').__version__}")
    print(f"model:       {args.shape}: {L} layers, hidden {H}, {cfg.num_attention_heads} heads, "
          f"{n_params / 1e6:.1f}M parameters, attention {cfg._attn_implementation}"
          f"{', torch.compile' if args.compile else ''}")
    print(f"batch:       micro-batch {batch} x seq {seq} = {tokens} tokens/step, bf16 autocast")
    print(f"steps:       {args.steps} timed after {args.warmup} warm-up (median)")
    print(f"step:        {step_s * 1e3:.2f} ms")
    print(f"throughput:  {tps:,.0f} tokens/s, MFU {100 * mfu:.1f}% of {args.peak_tflops:g} TFLOP/s")
    print(f"peak memory: {peak:.2f} GiB")
    print(f"final loss:  {loss.item():.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
