#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Tokenization throughput: neox's BPE tokenizer (the C++ `neox tokenize`
binary) against the Hugging Face `tokenizers` package, on the same documents,
the same tokenizer.json and the same number of threads, in one run. Also
checks that both give the same ids (a SHA-256 of all ids).

Each measurement is a fresh process that loads the tokenizer (cold word
caches, as when preprocessing starts), reads the documents, then times only
the encoding of all of them: HF's `Tokenizer.encode_batch` (and
`encode_batch_fast` where the version has it, which skips offsets) with
RAYON_NUM_THREADS threads; neox's `encode_batch` with --threads. MB/s are
10^6 bytes of UTF-8 text per second. The figure is the median of --repeats,
run interleaved (neox, HF, HF fast, neox, ...) so that both see the same load
on a shared machine; the CPU seconds of the encoding (all threads) are shown too.

Usage:
  tokenize_bench.py --neox build/bin/neox [--threads 1,2] [--repeats 3]
                    [--input docs.jsonl] [--tokenizer tokenizer.json | --vocab 50000]
Without --input, the documents are the text files found on a Debian machine
(one document per file): /usr/share/common-licenses, vim's help files and
the Python standard library's sources, at most --max-mb MB. Without
--tokenizer, a byte-level BPE like GPT-NeoX-20B's (NFC normalizer, ByteLevel
pre-tokenizer, --vocab tokens) is trained with HF tokenizers on those documents.
Needs: pip install tokenizers.
"""
import argparse
import glob
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

HF_WORKER = r"""
import hashlib, json, os, sys, time
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
with open(sys.argv[2], encoding="utf-8") as f:
    docs = [json.loads(line)["text"] for line in f if line.strip()]
method = sys.argv[3]
encode = getattr(tok, method)
start, cpu_start = time.perf_counter(), time.process_time()
encs = encode(docs)
seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
h = hashlib.sha256()
for e in encs:
    h.update((" ".join(map(str, e.ids)) + "\n").encode())
print(json.dumps({"seconds": seconds, "cpu": cpu, "sha256": h.hexdigest(),
                  "tokens": sum(len(e.ids) for e in encs)}))
"""


def build_corpus(path, max_mb):
    files = sorted(glob.glob("/usr/share/common-licenses/*"))
    files += sorted(glob.glob("/usr/share/vim/vim*/doc/*.txt"))
    files += sorted(glob.glob("/usr/lib/python3*/**/*.py", recursive=True))
    total, n = 0, 0
    with open(path, "w", encoding="utf-8") as out:
        for name in files:
            if not os.path.isfile(name):
                continue
            try:
                with open(name, encoding="utf-8") as f:
                    text = f.read()
            except (UnicodeDecodeError, OSError):
                continue
            if not text:
                continue
            out.write(json.dumps({"text": text}) + "\n")
            total += len(text.encode())
            n += 1
            if total >= max_mb * 1e6:
                break
    return n, total


def train_tokenizer(corpus, vocab, path):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>", "<|padding|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)

    def texts():
        with open(corpus, encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)["text"]

    tok.train_from_iterator(texts(), trainer)
    tok.save(path)


def run_hf(tokenizer, corpus, threads, method):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="true")
    out = subprocess.run([sys.executable, "-c", HF_WORKER, tokenizer, corpus, method], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_neox(neox, tokenizer, corpus, threads, ids_path):
    out = subprocess.run([neox, "tokenize", "--tokenizer-type", "HFTokenizer", "--vocab-file", tokenizer,
                          "--input", corpus, "--jsonl", "--threads", str(threads), "--stats", "--output", ids_path],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"neox tokenize failed:\n{out.stderr}")
    m = re.search(r"(\d+) tokens in ([0-9.]+) s", out.stderr)
    cpu = re.search(r"CPU time ([0-9.]+) s", out.stderr)
    h = hashlib.sha256()
    with open(ids_path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return {"seconds": float(m.group(2)), "cpu": float(cpu.group(1)), "tokens": int(m.group(1)),
            "sha256": h.hexdigest()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--neox", required=True, help="the neox binary")
    ap.add_argument("--input", help="documents as JSON lines with a \"text\" key")
    ap.add_argument("--max-mb", type=float, default=24.0)
    ap.add_argument("--tokenizer", help="a tokenizer.json (default: train one)")
    ap.add_argument("--vocab", type=int, default=50000)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import tokenizers

    work = tempfile.mkdtemp(prefix="neox_tokbench_")
    try:
        run(args, work, tokenizers)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args, work, tokenizers):
    corpus = args.input
    if not corpus:
        corpus = os.path.join(work, "corpus.jsonl")
        n, total = build_corpus(corpus, args.max_mb)
        print(f"corpus: {n} documents, {total / 1e6:.1f} MB (licenses, vim help, Python sources)")
    with open(corpus, encoding="utf-8") as f:
        total = sum(len(json.loads(line)["text"].encode()) for line in f if line.strip())
    tokenizer = args.tokenizer
    if not tokenizer:
        tokenizer = os.path.join(work, "tokenizer.json")
        train_tokenizer(corpus, args.vocab, tokenizer)
        print(f"tokenizer: byte-level BPE, NFC, {args.vocab} tokens, trained by HF tokenizers on the corpus")
    print(f"HF tokenizers {tokenizers.__version__}; {os.cpu_count()} CPUs; {total / 1e6:.2f} MB of text")
    methods = ["encode_batch"] + (["encode_batch_fast"] if hasattr(tokenizers.Tokenizer, "encode_batch_fast") else [])
    ids_path = os.path.join(work, "ids.txt")
    print(f"{'threads':>7}  {'encoder':<22} {'median s':>9} {'MB/s':>8} {'CPU s':>7}  {'tokens':>9}  ids")
    for threads in [int(t) for t in args.threads.split(",")]:
        names = ["neox"] + [f"HF {m}" for m in methods]
        rows = {name: [] for name in names}
        for _ in range(args.repeats):  # interleaved, so that both see the same load
            for name in names:
                if name == "neox":
                    rows[name].append(run_neox(args.neox, tokenizer, corpus, threads, ids_path))
                else:
                    rows[name].append(run_hf(tokenizer, corpus, threads, name.split()[1]))
        reference = rows[f"HF {methods[0]}"][0]["sha256"]
        for name, runs in rows.items():
            s = statistics.median(r["seconds"] for r in runs)
            cpu = statistics.median(r["cpu"] for r in runs)
            same = "same as HF" if all(r["sha256"] == reference for r in runs) else "DIFFERENT"
            print(f"{threads:>7}  {name:<22} {s:>9.3f} {total / s / 1e6:>8.2f} {cpu:>7.2f}  {runs[0]['tokens']:>9}  {same}")
        best_hf = min(statistics.median(r["seconds"] for r in rows[f"HF {m}"]) for m in methods)
        ours = statistics.median(r["seconds"] for r in rows["neox"])
        print(f"{threads:>7}  neox / fastest HF: {best_hf / ours:.1f}x")


if __name__ == "__main__":
    main()
