"""Prefix-shared text encoding for causal text towers that pool at the end-of-text token.

In a causal tower (CLIP, OpenCLIP, EVA02-CLIP, Hugging Face CLIP) a position's hidden
states depend only on the tokens up to it, so texts that begin with the same k tokens
have the same first k hidden states. LGIP's texts are mostly the same captions again (a
paraphrase template after the caption, a flip in the middle), so a chunk of texts holds
far fewer distinct prefixes than token positions. This module computes each distinct
prefix once: it builds the chunk's token trie, packs the trie's nodes into a few
sequences (each node at its depth's position embedding, attending only to its ancestors
and itself), runs the model's own blocks over them and reads each text's end node. The
embeddings equal the per-text encoding up to float rounding.

Standalone: it takes token id rows and a raw model (an open_clip CLIP / CustomTextCLIP
or a transformers CLIPModel) and returns embeddings; `supports_prefix_sharing` says
whether a model's tower qualifies (SigLIP's does not: it attends both ways). The model
backends call it from `encode_token_rows` (lgip/models/base.py).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable, List, Sequence

import numpy as np

# A pack's attention is dense over its nodes (O(P^2)), and smaller packs repeat more
# ancestors and pad more. On the bench's model (text width 192, best of 5 CPU runs of
# bench/bench_prefix.py, with the last MLP at end nodes only) packs of 80 cost least, 96
# 6% more, 64 5%, 128 18%, 192 and more 25% and up. A wider tower spends relatively less
# on attention, so there 96 to 256 cost about the same. A pack must hold a 77-token
# text's 76 ancestors and room to spare, hence not 80.
MAX_NODES_PER_PACK = 96
# Packs of one batch run through the blocks together (padded to the longest pack):
# enough rows per call to keep the matrix multiplies efficient, masks of bounded size.
NODES_PER_BATCH = 4096
# Where to cut between packs: the shallowest node in the last 1/CUT_WINDOW of a pack's
# room starts the next pack, since a pack repeats the ancestors of its first node.
CUT_WINDOW = 32
# The last block's MLP runs on a batch's end nodes only, their rows padded to a multiple
# of this: each new row count made the CPU allocator keep more memory (+450 MB at
# bench_eval --n 20000 with exact counts), a few padded rows cost next to nothing.
END_ROWS_MULTIPLE = 64
PAD_TOKEN = -1  # fills rows past their end in the padded matrices built here


@dataclass
class PrefixTrie:
    """The distinct prefixes of a chunk of token rows, one node per prefix, numbered in
    preorder: node k's descendants are the nodes k+1 .. subtree_end[k]-1.

    token[k]: the prefix's last token; depth[k]: its length - 1 (its position index);
    parent[k]: the node of the prefix one token shorter (-1 at depth 0);
    text_node[t]: the node of row t's whole sequence, in the rows' original order."""
    token: np.ndarray
    depth: np.ndarray
    parent: np.ndarray
    subtree_end: np.ndarray
    text_node: np.ndarray

    @property
    def num_nodes(self) -> int:
        return len(self.token)

    def ancestors(self, node: int) -> np.ndarray:
        """The proper ancestors of `node`, root first (ascending ids)."""
        path = []
        node = int(self.parent[node])
        while node >= 0:
            path.append(node)
            node = int(self.parent[node])
        return np.asarray(path[::-1], dtype=np.int64)


def padded_rows(token_rows: Sequence[Sequence[int]]):
    """The rows as one int32 matrix padded with PAD_TOKEN, and their lengths.
    ValueError on an empty row or a negative token id."""
    rows = [np.asarray(row, dtype=np.int64).reshape(-1) for row in token_rows]
    lengths = np.fromiter((len(row) for row in rows), dtype=np.int64, count=len(rows))
    if len(rows) and lengths.min() == 0:
        raise ValueError(f"token row {int(np.argmin(lengths))} is empty: every text has at least its end token")
    matrix = np.full((len(rows), int(lengths.max()) if len(rows) else 0), PAD_TOKEN, dtype=np.int32)
    if len(rows):
        flat = np.concatenate(rows)
        if flat.min() < 0:
            raise ValueError("token ids must be non-negative")
        matrix[np.arange(matrix.shape[1])[None, :] < lengths[:, None]] = flat
    return matrix, lengths


def build_prefix_trie(token_rows: Sequence[Sequence[int]]) -> PrefixTrie:
    """The token trie of `token_rows` (each a text's token ids up to and including its
    end token, no padding): one node per distinct prefix. Built without a Python loop
    over nodes: the rows are sorted, each row's shared prefix with the row before it
    is where the two first differ, and what is past it are the row's new nodes."""
    return _trie_from_padded(*padded_rows(token_rows))


def _trie_from_padded(matrix: np.ndarray, lengths: np.ndarray) -> PrefixTrie:
    num_rows, width = matrix.shape
    if num_rows == 0:
        empty = np.zeros(0, dtype=np.int64)
        return PrefixTrie(empty, empty, empty, empty, empty)
    # Lexicographic order, first column most significant; PAD_TOKEN (-1) sorts a row
    # before the longer rows it is a prefix of.
    order = np.lexsort(matrix.T[::-1])
    rows, row_lengths = matrix[order], lengths[order]
    same = rows[1:] == rows[:-1]
    shared = np.zeros(num_rows, dtype=np.int64)  # tokens shared with the previous row
    shared[1:] = np.where(same.all(axis=1), width, same.argmin(axis=1))
    shared[1:] = np.minimum(shared[1:], np.minimum(row_lengths[1:], row_lengths[:-1]))
    first_new = np.concatenate([[0], np.cumsum(row_lengths - shared)[:-1]])
    columns = np.arange(width)
    creates = (columns[None, :] >= shared[:, None]) & (columns[None, :] < row_lengths[:, None])
    # node_at[i, d]: the node of row i's prefix of length d + 1. A row's new nodes are
    # numbered after every earlier row's, so the newest node at depth d among rows <= i
    # (a running maximum down each column) is the one row i shares.
    node_at = np.where(creates, (first_new - shared).astype(np.int32)[:, None] + columns.astype(np.int32)[None, :],
                       np.int32(-1))
    np.maximum.accumulate(node_at, axis=0, out=node_at)
    new_row, new_depth = np.nonzero(creates)  # row-major: exactly node id order
    token = rows[new_row, new_depth].astype(np.int64)
    depth = new_depth.astype(np.int64)
    parent = np.where(depth > 0, node_at[new_row, np.maximum(depth - 1, 0)], -1).astype(np.int64)
    text_node = np.empty(num_rows, dtype=np.int64)
    text_node[order] = node_at[np.arange(num_rows), row_lengths - 1]
    return PrefixTrie(token, depth, parent, _subtree_ends(depth, parent), text_node)


def _subtree_ends(depth: np.ndarray, parent: np.ndarray) -> np.ndarray:
    """subtree_end[k] = k + the size of k's subtree, summed from the deepest level up."""
    size = np.ones(len(depth), dtype=np.int64)
    by_depth = np.argsort(depth, kind="stable")
    level_starts = np.searchsorted(depth[by_depth], np.arange(int(depth.max(initial=0)) + 2))
    for level in range(len(level_starts) - 2, 0, -1):
        nodes = by_depth[level_starts[level]:level_starts[level + 1]]
        np.add.at(size, parent[nodes], size[nodes])
    return np.arange(len(depth), dtype=np.int64) + size


@dataclass
class Pack:
    """One packed sequence: `nodes` (ascending ids) are the ancestors the owned range
    needs, then the owned range itself, nodes[owned_from:]. Every node is owned by
    exactly one pack; a pack holds every ancestor of each of its nodes."""
    nodes: np.ndarray
    owned_from: int


def plan_packs(trie: PrefixTrie, max_nodes_per_pack: int = MAX_NODES_PER_PACK) -> List[Pack]:
    """Cut the preorder into contiguous owned ranges of at most `max_nodes_per_pack`
    nodes with their ancestors. A range [a, b) needs only the ancestors of a: in
    preorder, an ancestor of a later node in the range that precedes a is one of a's."""
    max_depth = int(trie.depth.max(initial=0))
    if max_nodes_per_pack < max_depth + 2:
        raise ValueError(f"max_nodes_per_pack={max_nodes_per_pack}: a pack must hold a deepest node's "
                         f"{max_depth} ancestors and at least one node more")
    packs, start = [], 0
    while start < trie.num_nodes:
        ancestors = trie.ancestors(start)
        room = max_nodes_per_pack - len(ancestors)
        stop = min(trie.num_nodes, start + room)
        if stop < trie.num_nodes:
            # The next pack repeats its first node's ancestors: start it at a shallow node.
            window_start = max(start + 1, stop - room // CUT_WINDOW)
            window = trie.depth[window_start:stop + 1]
            stop = window_start + len(window) - 1 - int(np.argmin(window[::-1]))
        packs.append(Pack(np.concatenate([ancestors, np.arange(start, stop, dtype=np.int64)]), len(ancestors)))
        start = stop
    return packs


def pack_batches(packs: List[Pack], max_nodes_per_pack: int, nodes_per_batch: int = NODES_PER_BATCH):
    """(start, stop, width) of each batch of packs run together: packs[start:stop],
    padded to `width` nodes, the longest of them."""
    per_batch = max(1, nodes_per_batch // max_nodes_per_pack)
    return [(start, min(start + per_batch, len(packs)), max(len(pack.nodes) for pack in packs[start:start + per_batch]))
            for start in range(0, len(packs), per_batch)]


def encode_trie(trie: PrefixTrie, forward: Callable, device, max_nodes_per_pack: int = MAX_NODES_PER_PACK,
                nodes_per_batch: int = NODES_PER_BATCH):
    """The last hidden state (before the final norm) of each text's end node, [T, width],
    as `forward(token_ids [B,P], positions [B,P], additive_mask [B,P,P] float32, pick)`
    gives it for batches of packs: the states [B,P,width][pick], `pick` a pair of index
    tensors (pack, place) of the end nodes the batch owns (a batch that owns none is not
    run). Node q of a pack may attend to node k iff k is q or one of its ancestors: in
    preorder, iff k <= q < subtree_end[k]. Padding nodes attend only to themselves and
    nothing attends to them."""
    import torch

    packs = plan_packs(trie, max_nodes_per_pack)
    end_nodes, text_end = np.unique(trie.text_node, return_inverse=True)
    # Each end node is read from the pack that owns it, at owned_from + (node - first owned).
    first_owned = np.asarray([int(pack.nodes[pack.owned_from]) for pack in packs])
    owner = np.searchsorted(first_owned, end_nodes, side="right") - 1
    place = np.asarray([pack.owned_from for pack in packs])[owner] + end_nodes - first_owned[owner]
    hidden = None
    for batch_start, batch_stop, width in pack_batches(packs, max_nodes_per_pack, nodes_per_batch):
        wanted = np.flatnonzero((owner >= batch_start) & (owner < batch_stop))
        if not len(wanted):  # its packs' states are read by no text
            continue
        batch = packs[batch_start:batch_stop]
        ids = np.full((len(batch), width), -1, dtype=np.int64)  # -1: padding
        for row, pack in enumerate(batch):
            ids[row, :len(pack.nodes)] = pack.nodes
        real = ids >= 0
        safe = np.where(real, ids, 0)
        # Padding gets ids past every node and an empty subtree of its own.
        order_id = np.where(real, ids, trie.num_nodes + np.arange(width)[None, :])
        subtree_end = np.where(real, trie.subtree_end[safe], order_id + 1)
        node_id = torch.as_tensor(order_id, device=device)
        end = torch.as_tensor(subtree_end, device=device)
        visible = (node_id[:, None, :] <= node_id[:, :, None]) & (node_id[:, :, None] < end[:, None, :])
        mask = torch.zeros(visible.shape, dtype=torch.float32, device=device).masked_fill_(~visible, float("-inf"))
        tokens = torch.as_tensor(np.where(real, trie.token[safe], 0), device=device)
        positions = torch.as_tensor(np.where(real, trie.depth[safe], 0), device=device)
        picked = forward(tokens, positions, mask, (torch.as_tensor(owner[wanted] - batch_start, device=device),
                                                   torch.as_tensor(place[wanted], device=device)))
        if hidden is None:
            hidden = torch.empty((len(end_nodes), picked.shape[-1]), dtype=picked.dtype, device=device)
        hidden[torch.as_tensor(wanted, device=device)] = picked
    return hidden[torch.as_tensor(text_end.reshape(-1), device=device)]


def _pooled_rows(token_rows, pool_type: str, eos_id, max_positions: int):
    """The rows cut after the position the tower pools (what follows it cannot reach it
    through causal attention): 'argmax' pools the first highest id (CLIP's end token),
    'eos' the first `eos_id` (position 0 where there is none, as the models do)."""
    matrix, lengths = padded_rows(token_rows)
    if not len(lengths):
        return matrix, lengths
    if lengths.max() > max_positions:
        raise ValueError(f"token row {int(np.argmax(lengths))} has {int(lengths.max())} tokens; "
                         f"the tower has {max_positions} positions")
    if pool_type == "argmax":
        pooled = matrix.argmax(axis=1)
    else:
        pooled = (matrix == eos_id).argmax(axis=1)
    keep = pooled + 1
    matrix[np.arange(matrix.shape[1])[None, :] >= keep[:, None]] = PAD_TOKEN
    return matrix, keep


def _normalised_cpu(features):
    import torch

    return torch.nn.functional.normalize(features.float(), dim=-1).cpu()


# ---------------------------------------------------------------------------------------
# open_clip: CLIP (text tower on the model itself) and CustomTextCLIP (EVA02: model.text)
# ---------------------------------------------------------------------------------------

def _openclip_tower(model):
    """The module holding an open_clip model's text tower and its pooling rule, or
    ValueError saying why prefix sharing does not apply."""
    try:
        import open_clip
        from open_clip.transformer import TextTransformer
    except ImportError:
        raise ValueError("open_clip is not installed") from None
    if isinstance(model, open_clip.model.CLIP):
        tower, pool_type, eos_id = model, getattr(model, "text_pool_type", "argmax"), getattr(model, "text_eos_id", None)
    elif isinstance(model, open_clip.model.CustomTextCLIP) and isinstance(model.text, TextTransformer):
        tower, pool_type, eos_id = model.text, model.text.pool_type, getattr(model.text, "eos_id", None)
        if tower.cls_emb is not None:
            raise ValueError("this open_clip text tower appends a class token and pools it (CoCa-style)")
    else:
        raise ValueError(f"{type(model).__name__}: not an open_clip CLIP with its own text transformer")
    if tower.attn_mask is None:
        raise ValueError("this open_clip text tower attends both ways (no causal mask)")
    if pool_type not in ("argmax", "eos"):
        raise ValueError(f"this open_clip text tower pools '{pool_type}', not at the end-of-text token")
    return tower, pool_type, eos_id


def encode_prefix_shared_openclip(model, token_rows: Sequence[Sequence[int]],
                                  max_nodes_per_pack: int = MAX_NODES_PER_PACK,
                                  nodes_per_batch: int = NODES_PER_BATCH):
    """open_clip's `encode_text` for each row (a text's token ids up to and including its
    end token, no padding), with each distinct prefix computed once: L2-normalised
    float32 CPU tensor [T, D] in the rows' order. `model` is an open_clip CLIP or
    CustomTextCLIP in eval mode; ValueError when its tower does not qualify."""
    import torch
    from open_clip.transformer import ResidualAttentionBlock

    tower, pool_type, eos_id = _openclip_tower(model)
    matrix, lengths = _pooled_rows(token_rows, pool_type, eos_id, tower.positional_embedding.shape[0])
    if not len(lengths):
        return torch.zeros((0, _openclip_output_dim(tower)), dtype=torch.float32)
    trie = _trie_from_padded(matrix, lengths)
    cast_dtype = tower.transformer.get_cast_dtype()
    blocks = tower.transformer.resblocks
    heads = blocks[0].attn.num_heads
    # Past the last block's attention only the end nodes are read, so its MLP (two
    # thirds of a block's work) runs on them alone, where the block is open_clip's plain one.
    last = blocks[-1]
    end_only_mlp = (tower.transformer.batch_first and type(last) is ResidualAttentionBlock
                    and not hasattr(last, "ln_1_kv"))

    def forward(tokens, positions, mask, pick):
        x = tower.token_embedding(tokens).to(cast_dtype) + tower.positional_embedding.to(cast_dtype)[positions]
        # The blocks take a [P,P] mask or one per batch row and head, [B*heads,P,P], row-major.
        mask = (mask[0] if len(mask) == 1 else mask.repeat_interleave(heads, dim=0)).to(cast_dtype)
        if not end_only_mlp:
            return tower.transformer(x, attn_mask=mask)[pick]
        for block in blocks[:-1]:
            x = block(x, attn_mask=mask)
        x = (x + last.ls_1(last.attention(q_x=last.ln_1(x), attn_mask=mask)))[pick]
        ends = len(x)
        x = torch.cat([x, x.new_zeros((-ends % END_ROWS_MULTIPLE, x.shape[1]))])
        return (x + last.ls_2(last.mlp(last.ln_2(x))))[:ends]

    with torch.no_grad():
        hidden = encode_trie(trie, forward, tower.token_embedding.weight.device, max_nodes_per_pack, nodes_per_batch)
        x = tower.ln_final(hidden)
        if tower.text_projection is not None:
            x = tower.text_projection(x) if isinstance(tower.text_projection, torch.nn.Linear) else x @ tower.text_projection
        return _normalised_cpu(x)


def _openclip_output_dim(tower) -> int:
    projection = tower.text_projection
    if projection is None:
        return tower.ln_final.normalized_shape[0]
    return projection.out_features if hasattr(projection, "out_features") else projection.shape[1]


# ---------------------------------------------------------------------------------------
# transformers: CLIPModel and CLIPTextModelWithProjection
# ---------------------------------------------------------------------------------------

def _hf_clip_tower(model):
    """(text model, projection, pooling rule, eos id) of a transformers CLIP, or
    ValueError saying why prefix sharing does not apply."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", "")
    if "siglip" in model_type:
        raise ValueError(f"{type(model).__name__}: SigLIP's text tower attends both ways (no causal mask) and "
                         f"pools the last position, so a text's prefix states depend on what follows")
    if model_type not in ("clip", "clip_text_model") or not hasattr(model, "text_model") \
            or not hasattr(model, "text_projection"):
        raise ValueError(f"{type(model).__name__} ({model_type or 'no model_type'}): not a transformers CLIP "
                         f"with a text projection")
    text_model = model.text_model
    text_config = text_model.config
    implementation = getattr(text_config, "_attn_implementation", None) or "eager"
    if implementation not in ("eager", "sdpa"):
        raise ValueError(f"attention implementation '{implementation}' takes no additive mask; "
                         f"load the model with attn_implementation='sdpa' or 'eager'")
    eos_id = getattr(text_model, "eos_token_id", getattr(text_config, "eos_token_id", 2))
    # transformers' CLIP pools the first highest id when eos_token_id is the legacy 2,
    # else the first eos_token_id.
    return text_model, model.text_projection, ("argmax" if eos_id == 2 else "eos"), eos_id


def encode_prefix_shared_hf_clip(model, token_rows: Sequence[Sequence[int]],
                                 max_nodes_per_pack: int = MAX_NODES_PER_PACK,
                                 nodes_per_batch: int = NODES_PER_BATCH):
    """transformers' `get_text_features` for each row (token ids up to and including the
    end token, no padding), each distinct prefix computed once: L2-normalised float32
    CPU tensor [T, D] in the rows' order. `model` is a CLIPModel or
    CLIPTextModelWithProjection in eval mode; ValueError for anything else (SigLIP)."""
    import torch

    text_model, projection, pool_type, eos_id = _hf_clip_tower(model)
    embeddings = text_model.embeddings
    matrix, lengths = _pooled_rows(token_rows, pool_type, eos_id, embeddings.position_embedding.num_embeddings)
    if not len(lengths):
        return torch.zeros((0, projection.out_features), dtype=torch.float32)
    trie = _trie_from_padded(matrix, lengths)
    layers = text_model.encoder.layers
    # transformers 4.x layers take (hidden, attention_mask, causal_attention_mask) and
    # add both to the scores; 5.x take (hidden, attention_mask). Either way one additive mask.
    takes_causal = "causal_attention_mask" in inspect.signature(layers[0].forward).parameters
    dtype = embeddings.token_embedding.weight.dtype

    def forward(tokens, positions, mask, pick):
        x = embeddings.token_embedding(tokens) + embeddings.position_embedding(positions)
        mask = mask[:, None].to(dtype)  # [B, 1, P, P]: the same for every head
        for layer in layers:
            x = layer(x, mask, None) if takes_causal else layer(x, mask)
            x = x[0] if isinstance(x, tuple) else x
        return x[pick]

    with torch.no_grad():
        hidden = encode_trie(trie, forward, embeddings.token_embedding.weight.device, max_nodes_per_pack,
                             nodes_per_batch)
        return _normalised_cpu(projection(text_model.final_layer_norm(hidden)))


def _is_openclip(model) -> bool:
    return type(model).__module__.startswith("open_clip")


def supports_prefix_sharing(model) -> bool:
    """Whether `model` (a raw open_clip or transformers model) has a causal text tower
    that pools at the end-of-text token, which the encoders here handle."""
    check = _openclip_tower if _is_openclip(model) else _hf_clip_tower
    try:
        check(model)
    except ValueError:
        return False
    return True


def encode_prefix_shared(model, token_rows: Sequence[Sequence[int]]):
    """The open_clip or transformers encoder above, whichever `model` needs."""
    encoder = encode_prefix_shared_openclip if _is_openclip(model) else encode_prefix_shared_hf_clip
    return encoder(model, token_rows)
