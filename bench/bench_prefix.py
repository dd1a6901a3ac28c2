"""Prefix-shared text encoding against the engine's two text paths, side by side.

Texts: the unique texts run_lgip_multi.py scores (captions, paraphrases, flips) in what
diff_gen_caption.py makes from tests/data/base_sample.jsonl (run into a temporary
folder), tokenised with open_clip's CLIP tokenizer. Model: bench_eval.py's random open_clip
CLIP (embed 128, width 192, 4 layers, 64 px images), built with its own builder.

It prints the texts' unique count, token positions and distinct prefix positions (the
work prefix sharing leaves), the time to build the token trie (vectorised, and a
dict-per-node Python trie for comparison), then the seconds to encode every text:

  plain      every text padded to the full context (77), batches of TEXT_BATCH_SIZE
  trimmed    the engine's exact trimming: texts grouped by token length, each batch at
             its own length (lgip.engine.embed.text_batches' order and batches)
  prefix     lgip.models.prefix.encode_prefix_shared_openclip, each distinct prefix once
             (trie build and packing included), at the default pack size and at each
             size of --pack-sizes

with the ratios and the largest difference from the plain embeddings. Each timing is
the best of --repeat runs (the machine may be shared).

    python bench/bench_prefix.py
    python bench/bench_prefix.py --pack-sizes 128,256,512,1024 --repeat 5 --threads 2
    python bench/bench_prefix.py --device cuda
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
for folder in (REPO, BENCH):
    if folder not in sys.path:
        sys.path.insert(0, folder)

import bench_eval  # noqa: E402  (after the path is set)
import run_lgip_multi  # noqa: E402
from lgip.cli import nonnegative_int, positive_int  # noqa: E402
from lgip.engine import build_plan  # noqa: E402
from lgip.engine.embed import tokenize_all  # noqa: E402
from lgip.models import load_model, prefix  # noqa: E402

BASE_JSONL = os.path.join(REPO, "tests", "data", "base_sample.jsonl")
TEXT_BATCH_SIZE = run_lgip_multi.TEXT_BATCH_SIZE
PACK_SIZES = [96, 192, 256, 512, 1024]
REPEATS = 3
DEVICE = "cpu"


def make_texts(folder: str) -> list:
    """run_lgip_multi's unique texts in diff_gen_caption.py's output for BASE_JSONL."""
    output = os.path.join(folder, "base_sample_with_perturb.jsonl")
    subprocess.run([sys.executable, os.path.join(REPO, "diff_gen_caption.py"), "--input", BASE_JSONL,
                    "--output", output], check=True, capture_output=True, text=True)
    return list(build_plan(output, run_lgip_multi.variant_groups).texts)


def dict_trie_nodes(rows) -> int:
    """The node count of a plain Python trie (a dict per node): the construction the
    vectorised one replaces, timed beside it."""
    root, count = {}, 0
    for row in rows:
        node = root
        for token in row:
            child = node.get(token)
            if child is None:
                child = node[token] = {}
                count += 1
            node = child
    return count


def best_of(repeats: int, function):
    """(result of the last run, fewest wall seconds, fewest CPU seconds of this process)
    over `repeats` runs. CPU seconds hardly move when other processes share the machine."""
    import torch

    wall, cpu, result = float("inf"), float("inf"), None
    for _ in range(repeats):
        started, started_cpu = time.perf_counter(), time.process_time()
        result = function()
        if str(DEVICE).startswith("cuda"):
            torch.cuda.synchronize()
        wall, cpu = min(wall, time.perf_counter() - started), min(cpu, time.process_time() - started_cpu)
    return result, wall, cpu


def encode_plain(model, tokens):
    import torch

    out = []
    for start in range(0, len(tokens.lengths), TEXT_BATCH_SIZE):
        rows = range(start, min(start + TEXT_BATCH_SIZE, len(tokens.lengths)))
        out.append(model.encode_tokens(torch.from_numpy(tokens.rows(rows, model.text_width())),
                                       tokens.lengths[rows.start:rows.stop]))
    return torch.cat(out)


def encode_trimmed(model, tokens):
    """encode_text_units' batching without its cache: by length, each batch at its width."""
    import numpy as np
    import torch

    order = np.argsort(tokens.lengths, kind="stable")
    widths = tokens.lengths[order]
    starts = np.flatnonzero(np.r_[True, widths[1:] != widths[:-1]])
    out = torch.empty((len(order), model.model.text_projection.shape[1]), dtype=torch.float32)
    for group_start, group_stop in zip(starts, np.r_[starts[1:], len(order)]):
        for start in range(group_start, group_stop, TEXT_BATCH_SIZE):
            batch = order[start:min(start + TEXT_BATCH_SIZE, group_stop)]
            out[torch.as_tensor(batch)] = model.encode_tokens(torch.from_numpy(tokens.rows(batch, int(widths[start]))),
                                                              tokens.lengths[batch])
    return out


def token_rows(tokens) -> list:
    return tokens.token_lists(range(len(tokens.lengths)))


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=DEVICE, help="torch device (default: %(default)s)")
    parser.add_argument("--repeat", type=positive_int, default=REPEATS,
                        help="runs per timing, the best one reported (default: %(default)s)")
    parser.add_argument("--pack-sizes", default=",".join(map(str, PACK_SIZES)),
                        help="max nodes per pack to sweep, comma-separated (default: %(default)s)")
    parser.add_argument("--nodes-per-batch", type=positive_int, default=prefix.NODES_PER_BATCH,
                        help="nodes run through the blocks per call (default: %(default)s)")
    parser.add_argument("--threads", type=nonnegative_int, default=0,
                        help="torch CPU threads; 0 leaves torch's choice (default: %(default)s)")
    return parser.parse_args()


def main():
    global DEVICE
    import torch

    args = parse_args()
    DEVICE = args.device
    if args.threads:
        torch.set_num_threads(args.threads)
    pack_sizes = [int(size) for size in args.pack_sizes.split(",") if size]
    with tempfile.TemporaryDirectory(prefix="bench_prefix_") as folder:
        texts = make_texts(folder)
        spec = bench_eval.build_model(os.path.join(folder, "model"), bench_eval.EMBED_DIM, bench_eval.WIDTH,
                                      bench_eval.LAYERS)
        model = load_model(spec, args.device)
    tokens = tokenize_all(model, texts, progress=False)
    rows = token_rows(tokens)
    trie, trie_seconds, _ = best_of(args.repeat, lambda: prefix.build_prefix_trie(rows))
    dict_nodes, dict_seconds, _ = best_of(args.repeat, lambda: dict_trie_nodes(rows))
    positions = int(tokens.lengths.sum())
    print(f"commit {bench_eval.repository_version()}; device {args.device}; torch threads {torch.get_num_threads()}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"texts: {len(texts):,} unique (run_lgip_multi's texts in diff_gen_caption.py's output for "
          f"tests/data/base_sample.jsonl)")
    print(f"token positions: {positions:,}; distinct prefix positions: {trie.num_nodes:,} "
          f"({trie.num_nodes / positions:.1%}; {1 - trie.num_nodes / positions:.1%} repeat a prefix)")
    print(f"model: bench_eval's open_clip CLIP, embed {bench_eval.EMBED_DIM}, text width {bench_eval.WIDTH}, "
          f"{bench_eval.LAYERS} layers, {bench_eval.TEXT_HEADS} heads")
    print(f"trie build: vectorised {trie_seconds * 1000:.1f} ms, dict-per-node Python trie {dict_seconds * 1000:.1f} ms "
          f"({dict_nodes:,} nodes: {'same' if dict_nodes == trie.num_nodes else 'DIFFERENT'})")

    reference, *plain_seconds = best_of(args.repeat, lambda: encode_plain(model, tokens))
    results = [("plain (77 padding)", plain_seconds, len(texts) * model.text_width(), reference)]
    trimmed, *trimmed_seconds = best_of(args.repeat, lambda: encode_trimmed(model, tokens))
    results.append(("trimmed (per-length batches)", trimmed_seconds, positions, trimmed))
    for size in [prefix.MAX_NODES_PER_PACK] + [s for s in pack_sizes if s != prefix.MAX_NODES_PER_PACK]:
        per_batch = max(args.nodes_per_batch, size)
        embeddings, *seconds = best_of(args.repeat, lambda: prefix.encode_prefix_shared_openclip(
            model.model, rows, max_nodes_per_pack=size, nodes_per_batch=per_batch))
        packs = prefix.plan_packs(trie, size)
        computed = sum((stop - start) * width for start, stop, width in prefix.pack_batches(packs, size, per_batch))
        default = " (default)" if size == prefix.MAX_NODES_PER_PACK else ""
        results.append((f"prefix P={size}{default}, {len(packs)} packs", seconds, computed, embeddings))

    header = (f"{'method':<34} {'wall s':>7} {'cpu s':>7} {'positions':>10} {'x plain':>14} {'x trimmed':>14} "
              f"{'max|diff|':>9}")
    print("\n" + header + "\n" + "-" * len(header))
    for name, (wall, cpu), computed, embeddings in results:
        difference = (embeddings - reference).abs().max().item()
        print(f"{name:<34} {wall:>7.3f} {cpu:>7.3f} {computed:>10,} {plain_seconds[0] / wall:>6.2f} "
              f"{plain_seconds[1] / cpu:>7.2f} {trimmed_seconds[0] / wall:>6.2f} {trimmed_seconds[1] / cpu:>7.2f} "
              f"{difference:>9.1e}")
    print("wall s / cpu s: best of the runs (CPU seconds of this process; steadier on a shared machine); "
          "x plain, x trimmed:\nhow many times faster than that path, in wall and in CPU seconds; positions: "
          "token positions run through\nthe blocks (prefix: distinct prefixes, the ancestors each pack repeats and "
          "the padding of its batches);\nmax|diff|: largest difference from the plain embeddings.")

if __name__ == "__main__":
    main()
