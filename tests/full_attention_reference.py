"""Independent PyTorch fp32 reference of the full-attention diffusion LLMs (LLaDA, Dream)
and of every official sampler of docs full_attention_dllms.md (the contract), quirks
included. Section numbers below refer to that document.

Model (section 2): fp32 forward from the weights dict; K/V cached per layer *before* RoPE
([kv_heads, T, head_dim]); RoPE applied on the fly at absolute positions. Three forward
kinds, each counted as one NFE: `full`, `prefix` (x[start:] over a cached prefix) and
`dual` (x[start:end] with the block's K/V replacing the cache rows in place).

Samplers: LLaDA 3.1-3.4, Dream 4.1-4.4; `reference_generate` maps the fastdllm_rt keyword
names of section 6 onto them. Confidences use the dtypes of section 5 and threshold
comparisons are made the way the official code makes them (torch tensor vs Python float,
i.e. in the tensor's dtype; `.item()` vs float where the official code calls `.item()`).
"""
from __future__ import annotations

import json
import math
import os
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from model_factory import load_weights

KV = List[Tuple[torch.Tensor, torch.Tensor]]  # per layer: pre-RoPE K, V as [kv_heads, T, head_dim]

# 4.4: AdaBlock's Dream delimiter set (hard-coded Qwen2 ids).
DREAM_DELIMITER_IDS = [198, 271, 280, 319, 340, 382, 401, 532, 624, 630, 692, 698, 921, 1248, 1837, 1939,
                       2219, 2533, 3276, 3876, 4894, 5267, 14750, 68327]
LLADA_DELIMITER_IDS = [198]  # 3.4 default
DREAM_EPS = 1e-3  # 4.1: DreamGenerationConfig eps


# --------------------------------------------------------------------------- model (2)

class FullAttentionModel:
    """fp32 LLaDA (2.1) / Dream (2.2) forward. `nfe` counts forward calls."""

    def __init__(self, cfg: dict, weights: Dict[str, torch.Tensor]):
        self.cfg = cfg
        self.family = "llada" if cfg["model_type"].lower() == "llada" else "dream"
        w = {k: v.to(torch.float32) for k, v in weights.items()}
        self.layers = []
        if self.family == "llada":
            t = "model.transformer."
            self.H, self.nh, self.nkv = cfg["d_model"], cfg["n_heads"], cfg.get("n_kv_heads") or cfg["n_heads"]
            self.n_layers, self.eps, theta = cfg["n_layers"], cfg["rms_norm_eps"], cfg["rope_theta"]
            self.emb, self.final_norm = w[t + "wte.weight"], w[t + "ln_f.weight"]
            self.head = self.emb if cfg.get("weight_tying") else w[t + "ff_out.weight"]
            for i in range(self.n_layers):
                p = f"{t}blocks.{i}."
                self.layers.append(dict(
                    attn_norm=w[p + "attn_norm.weight"], q=w[p + "q_proj.weight"], k=w[p + "k_proj.weight"],
                    v=w[p + "v_proj.weight"], bq=None, bk=None, bv=None, o=w[p + "attn_out.weight"],
                    mlp_norm=w[p + "ff_norm.weight"], gate=w[p + "ff_proj.weight"], up=w[p + "up_proj.weight"],
                    down=w[p + "ff_out.weight"]))
        else:
            self.H, self.nh, self.nkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
            self.n_layers, self.eps, theta = cfg["num_hidden_layers"], cfg["rms_norm_eps"], cfg["rope_theta"]
            self.emb, self.final_norm = w["model.embed_tokens.weight"], w["model.norm.weight"]
            self.head = self.emb if cfg.get("tie_word_embeddings") else w["lm_head.weight"]
            for i in range(self.n_layers):
                p = f"model.layers.{i}."
                a = p + "self_attn."
                self.layers.append(dict(
                    attn_norm=w[p + "input_layernorm.weight"], q=w[a + "q_proj.weight"], k=w[a + "k_proj.weight"],
                    v=w[a + "v_proj.weight"], bq=w[a + "q_proj.bias"], bk=w[a + "k_proj.bias"],
                    bv=w[a + "v_proj.bias"], o=w[a + "o_proj.weight"], mlp_norm=w[p + "post_attention_layernorm.weight"],
                    gate=w[p + "mlp.gate_proj.weight"], up=w[p + "mlp.up_proj.weight"],
                    down=w[p + "mlp.down_proj.weight"]))
        self.hd = self.H // self.nh
        self.inv_freq = 1.0 / (theta ** (torch.arange(0, self.hd, 2, dtype=torch.float32) / self.hd))
        self.mask_id = cfg.get("mask_token_id")
        self.nfe = 0

    @classmethod
    def from_path(cls, path: str) -> "FullAttentionModel":
        with open(os.path.join(path, "config.json")) as f:
            return cls(json.load(f), load_weights(path))

    # ---- pieces (2.1)
    def _rms(self, x, w):
        y = x.float()
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)
        return w * y.to(x.dtype)

    def _rope(self, x, pos0):
        """x [heads, T, hd] at positions pos0..pos0+T-1; half-split rotate, fp32 angles."""
        pos = torch.arange(pos0, pos0 + x.shape[1], dtype=torch.float32)
        freqs = pos[:, None] * self.inv_freq[None, :]
        emb = torch.cat([freqs, freqs], -1)
        h = self.hd // 2
        rot = torch.cat([-x[..., h:], x[..., :h]], -1)
        return x * emb.cos() + rot * emb.sin()

    @torch.no_grad()
    def _forward(self, ids: torch.Tensor, q_pos0: int, keys_fn):
        """ids [T]; queries at q_pos0..; keys_fn(layer, k, v) -> pre-RoPE K, V at 0..Tk-1.
        Returns logits [T, V] and the fresh pre-RoPE K/V per layer."""
        self.nfe += 1
        T = ids.shape[0]
        h = self.emb[ids]
        fresh: KV = []
        for li, L in enumerate(self.layers):
            a = self._rms(h, L["attn_norm"])
            q = F.linear(a, L["q"], L["bq"]).view(T, self.nh, self.hd).transpose(0, 1)
            k = F.linear(a, L["k"], L["bk"]).view(T, self.nkv, self.hd).transpose(0, 1)
            v = F.linear(a, L["v"], L["bv"]).view(T, self.nkv, self.hd).transpose(0, 1)
            fresh.append((k, v))
            K, V = keys_fn(li, k, v)
            qr, kr = self._rope(q, q_pos0), self._rope(K, 0)
            rep = self.nh // self.nkv  # GQA: KV head j serves query heads j*rep .. j*rep+rep-1
            kr, V = kr.repeat_interleave(rep, 0), V.repeat_interleave(rep, 0)
            att = F.scaled_dot_product_attention(qr[None], kr[None], V[None], is_causal=False)[0]
            h = h + F.linear(att.transpose(0, 1).reshape(T, self.nh * self.hd), L["o"])
            m = self._rms(h, L["mlp_norm"])
            h = h + F.linear(F.silu(F.linear(m, L["gate"])) * F.linear(m, L["up"]), L["down"])
        return F.linear(self._rms(h, self.final_norm), self.head), fresh

    # ---- the three forward kinds (2.1 KV cache, 3.2)
    def full(self, x) -> Tuple[torch.Tensor, KV]:
        """Full forward over x: logits [L, V] and every layer's pre-RoPE K/V of all positions."""
        x = torch.as_tensor(x, dtype=torch.long)
        return self._forward(x, 0, lambda li, k, v: (k, v))

    def prefix(self, x_suffix, start: int, cache: KV) -> torch.Tensor:
        """Prefix-cache forward: input x[start:], keys = cached [0,start) ++ fresh."""
        x_suffix = torch.as_tensor(x_suffix, dtype=torch.long)
        assert all(k.shape[1] == start for k, _ in cache)
        return self._forward(x_suffix, start,
                             lambda li, k, v: (torch.cat([cache[li][0], k], 1), torch.cat([cache[li][1], v], 1)))[0]

    def dual(self, x_block, start: int, end: int, cache: KV) -> torch.Tensor:
        """Dual-cache forward: input x[start:end]; in every layer the fresh K/V replace the
        cache rows [start,end) (the list entries are replaced, as the official in-place
        write); queries start..end-1 attend to all cached keys."""
        x_block = torch.as_tensor(x_block, dtype=torch.long)
        assert x_block.shape[0] == end - start

        def keys(li, k, v):
            K, V = cache[li][0].clone(), cache[li][1].clone()
            K[:, start:end], V[:, start:end] = k, v
            cache[li] = (K, V)
            return K, V
        return self._forward(x_block, start, keys)[0]


def reference_logits(model: FullAttentionModel, ids) -> torch.Tensor:
    """Full-forward logits [L, V] as the model outputs them (unshifted, fp32)."""
    return model.full(ids)[0]


def _prefix_cache(kv: KV, start: int) -> KV:
    return [(k[:, :start].clone(), v[:, :start].clone()) for k, v in kv]


def _dream_shift(logits: torch.Tensor) -> torch.Tensor:
    """2.2: position p is predicted by the output at p-1 of the tensor fed to the model;
    the first input position keeps its own output (also for cached forwards: quirk)."""
    return torch.cat([logits[:1], logits[:-1]], 0)


# --------------------------------------------------------------------------- shared rules

def llada_schedule(masks: int, S: int) -> List[int]:
    """Section 3 schedule: k_i = base+1 for i < rem, else base (base = M // S, rem = M % S)."""
    base, rem = divmod(masks, S)
    return [base + 1 if i < rem else base for i in range(S)]


def dream_transfer_count(n_masked: int, timesteps: torch.Tensor, i: int, steps: int) -> int:
    """4.1/4.2: k = int(n (1 - s/t)) in fp32 tensors (n fp32), int(n) on the last step."""
    n = torch.tensor(n_masked) / 1  # true division of an int64 tensor: fp32, as mask.sum() / batch
    if i < steps - 1:
        t, s = timesteps[i], timesteps[i + 1]
        return int(n * (1 - s / t))
    return int(n)


def _topk_indices(scores: torch.Tensor, cand: torch.Tensor, k: int, largest: bool = True):
    fill = -math.inf if largest else math.inf
    vals, idx = torch.topk(torch.where(cand, scores, torch.full_like(scores, fill)), k, largest=largest)
    return vals, idx


def _commit(x: torch.Tensor, s: int, idx, x0: torch.Tensor):
    """x[s + j] = x0[j] for j in idx (block-local indices)."""
    for j in [int(i) for i in idx]:
        x[s + j] = x0[j]


def _first_plus(vals, idx, keep) -> List[int]:
    """The first selected index always, each other one iff keep(value)."""
    out = [int(idx[0])] if len(idx) else []
    out += [int(idx[j]) for j in range(1, len(idx)) if keep(vals[j])]
    return out


# ---- LLaDA confidences
def llada_conf64(logits: torch.Tensor):
    """3.2: x0 = argmax(fp32 logits); conf = float64 softmax at x0."""
    x0 = logits.argmax(-1)
    p = F.softmax(logits.to(torch.float64), -1)
    return x0, p.gather(-1, x0[:, None])[:, 0]


def llada_entropy64(logits: torch.Tensor):
    """3.3: x0 = argmax; H = -sum p ln(p + 1e-12) in float64."""
    x0 = logits.argmax(-1)
    p = F.softmax(logits.to(torch.float64), -1)
    return x0, -torch.sum(p * torch.log(p + 1e-12), -1)


# ---- LLaDA transfer rules on the block rows (3.2, 3.3); each commits into x[s:e]
def rule_fixed(x, s, logits, cand, k):
    """3.2 fixed: the k most confident candidates (float64 conf)."""
    x0, conf = llada_conf64(logits)
    _commit(x, s, _topk_indices(conf, cand, k)[1], x0)


def rule_threshold(x, s, logits, cand, threshold):
    """3.2 threshold: first by conf always, every other iff not conf < threshold."""
    x0, conf = llada_conf64(logits)
    vals, idx = _topk_indices(conf, cand, int(cand.sum()))
    _commit(x, s, _first_plus(vals, idx, lambda c: not bool(c < threshold)), x0)


def factor_count(sorted_conf: Sequence[float], factor: float) -> int:
    """3.2 factor rule (get_transfer_index_dynamic): thr(1) = -1, thr(n) = 1 - factor/(n+1);
    j = first n with c(n) < thr(n); commit j-1, or all M if none fails or j == M (quirk)."""
    M = len(sorted_conf)
    thr = [1 - factor / (n + 1) for n in range(1, M + 1)]
    thr[0] = -1
    top_i = 0
    for top_i in range(M):
        if sorted_conf[top_i] < thr[top_i]:
            break
    if top_i == 0 or top_i == M - 1:
        top_i += 1
    return top_i


def rule_factor(x, s, logits, cand, factor):
    x0, conf = llada_conf64(logits)
    M = int(cand.sum())
    if M == 0:
        return
    sorted_conf = torch.sort(conf[cand], descending=True)[0]
    n = factor_count([sorted_conf[j] for j in range(M)], factor)
    _commit(x, s, _topk_indices(conf, cand, n)[1], x0)


def rule_entropy(x, s, logits, cand, threshold, k=None):
    """3.3 entropy rule: sort by H ascending, first always, others iff not H > threshold;
    threshold None: the k lowest-entropy candidates."""
    x0, H = llada_entropy64(logits)
    if threshold is None:
        _commit(x, s, _topk_indices(H, cand, k, largest=False)[1], x0)
        return
    vals, idx = _topk_indices(H, cand, int(cand.sum()), largest=False)
    _commit(x, s, _first_plus(vals, idx, lambda h: not bool(h > threshold)), x0)


def rule_adablock(x, s, logits, cand, threshold):
    """3.4 step 4: candidates with conf >= threshold (float64) plus the candidate with the
    largest conf (first index on ties): always at least one."""
    x0, conf = llada_conf64(logits)
    if not bool(cand.any()):
        return
    full = torch.where(cand, conf, torch.full_like(conf, torch.finfo(conf.dtype).min))
    sel = set(int(j) for j in torch.nonzero(cand & (full >= threshold)).flatten())
    sel.add(int(torch.argmax(full)))
    _commit(x, s, sorted(sel), x0)


# ---- Dream confidences (4: sample_tokens, fp32)
def dream_sample_tokens(logits: torch.Tensor, kind: str = "maskgit_plus"):
    """probs = softmax (fp32); conf, x0 = probs.max; topk_margin: p1 - p2;
    entropy: sum p ln(p + 1e-10) (= -H)."""
    probs = torch.softmax(logits, -1)
    conf, x0 = probs.max(-1)
    if kind == "topk_margin":
        sp = torch.sort(probs, -1, descending=True)[0]
        conf = sp[:, 0] - sp[:, 1]
    elif kind == "entropy":
        conf = torch.sum(probs * torch.log(probs + 1e-10), -1)
    return conf, x0


def dream_rule_threshold(x, s, logits, cand, threshold, k=None):
    """4.2/4.4 confidence_threshold: the k best candidates (k: the block's masks,
    current_transfer_tokens; default all candidates); first by conf always, others
    iff not conf < threshold (fp32 comparison)."""
    conf, x0 = dream_sample_tokens(logits)
    vals, idx = _topk_indices(conf, cand, int(cand.sum()) if k is None else k)
    _commit(x, s, _first_plus(vals, idx, lambda c: not bool(c < threshold)), x0)


def adablock_block_length(logits: torch.Tensor, start: int, G: int, done: int, init_len: int,
                          delimiter_ids: Sequence[int], delimiter_threshold: float) -> int:
    """3.4 step 2 / 4.4 compute_block_length (logits: the block-start forward's rows of
    the whole x; Dream: shifted). W = min(int(0.25 G), rem); best delimiter conf in fp32
    (first position on ties) compared via .item() >= delimiter_threshold."""
    rem = G - done
    W = min(int(0.25 * G), rem)
    pred = logits[start:start + W].argmax(-1)
    dmask = torch.zeros_like(pred, dtype=torch.bool)
    for t in delimiter_ids:
        dmask |= pred == t
    if not bool(dmask.any()):
        return min(init_len, rem)
    pos = start + torch.nonzero(dmask).squeeze(-1)
    rows = logits[pos]
    c = torch.exp(rows.gather(-1, pred[pos - start][:, None])[:, 0] - torch.logsumexp(rows, -1))
    cmax, best = torch.max(c, 0)
    if cmax.item() >= delimiter_threshold:
        return int(pos[best]) - start + 1
    return min(init_len, rem)


# --------------------------------------------------------------------------- LLaDA loops (3)

def _init_x(prompt, G, mask_id):
    return torch.tensor(list(prompt) + [mask_id] * G, dtype=torch.long)


def _blocks(G, B, steps):
    if B is None or B <= 0 or G % B:
        raise ValueError(f"gen_length {G} must be a multiple of block_length {B}")
    nb = G // B
    if steps is None or steps % nb:
        raise ValueError(f"steps {steps} must be a multiple of the number of blocks {nb}")
    return nb, steps // nb


def llada_low_confidence(model, prompt, G, B, steps, mask_id):
    """3.1 ML-GSAI generate: exactly S forwards per block; conf in the logits' dtype (fp32)."""
    x, P = _init_x(prompt, G, mask_id), len(prompt)
    nb, S = _blocks(G, B, steps)
    for b in range(nb):
        s, e = P + b * B, P + (b + 1) * B
        ks = llada_schedule(int((x[s:e] == mask_id).sum()), S)
        for i in range(S):
            # candidates: every mask before the block's end (prompt masks too; x0_p[:, end:] = -inf)
            logits = model.full(x)[0][:e]
            x0 = logits.argmax(-1)
            conf = F.softmax(logits, -1).gather(-1, x0[:, None])[:, 0]
            _commit(x, 0, _topk_indices(conf, x[:e] == mask_id, ks[i])[1], x0)
    return x


def llada_blockwise(model, prompt, G, B, steps, mask_id, cache, transfer, old_loop=False):
    """3.2 Fast-dLLM v1 generate / generate_with_prefix_cache / generate_with_dual_cache
    (45484e4: cached loops check "block full" before the forward). old_loop=True: the
    first-release loop used by dParallel (3.3): check after, so >= 1 cached forward/block.
    transfer(x, s, logits_block, cand, step_index, schedule)."""
    x, P = _init_x(prompt, G, mask_id), len(prompt)
    nb, S = _blocks(G, B, steps)
    for b in range(nb):
        s, e = P + b * B, P + (b + 1) * B
        ks = llada_schedule(int((x[s:e] == mask_id).sum()), S)
        full = lambda: not bool((x[s:e] == mask_id).any())  # noqa: E731
        # Full forwards take every mask before the block's end as a candidate
        # (mask_index[:, end:] = 0); cached steps only the block's.
        if cache == "none":
            i = 0
            while True:
                transfer(x, 0, model.full(x)[0][:e], x[:e] == mask_id, i, ks)
                i += 1
                if full():
                    break
            continue
        logits, kv = model.full(x)                       # block-start forward (step 0)
        transfer(x, 0, logits[:e], x[:e] == mask_id, 0, ks)
        if cache == "prefix":
            kv = _prefix_cache(kv, s)                    # K/V of [0, s) from that forward
        i = 1
        while True:
            if not old_loop and full():
                break
            if cache == "prefix":
                lg = model.prefix(x[s:], s, kv)[:e - s]
            else:
                lg = model.dual(x[s:e], s, e, kv)
            transfer(x, s, lg, x[s:e] == mask_id, i, ks)
            i += 1
            if old_loop and full():
                break
    return x


def _schedule_k(ks, i):
    if i >= len(ks):
        raise ValueError("fixed-k schedule exhausted (the official code raises IndexError here)")
    return ks[i]


def llada_fastdllm(model, prompt, G, B, steps, mask_id, cache, threshold=None, factor=None):
    """3.2: factor set -> factor rule; else threshold set -> threshold rule; else fixed."""
    if factor is not None:
        t = lambda x, s, lg, cand, i, ks: rule_factor(x, s, lg, cand, factor)  # noqa: E731
    elif threshold is not None:
        t = lambda x, s, lg, cand, i, ks: rule_threshold(x, s, lg, cand, threshold)  # noqa: E731
    else:
        t = lambda x, s, lg, cand, i, ks: rule_fixed(x, s, lg, cand, _schedule_k(ks, i))  # noqa: E731
    return llada_blockwise(model, prompt, G, B, steps, mask_id, cache, t)


def llada_dparallel(model, prompt, G, B, steps, mask_id, cache, threshold=None):
    """3.3 dParallel: entropy rule (no cache: fixed conf top-k when threshold is None);
    cached variants use the old (check-after) loop."""
    if cache == "none" and threshold is None:
        t = lambda x, s, lg, cand, i, ks: rule_fixed(x, s, lg, cand, _schedule_k(ks, i))  # noqa: E731
    elif threshold is None:
        t = lambda x, s, lg, cand, i, ks: rule_entropy(x, s, lg, cand, None, _schedule_k(ks, i))  # noqa: E731
    else:
        t = lambda x, s, lg, cand, i, ks: rule_entropy(x, s, lg, cand, threshold)  # noqa: E731
    return llada_blockwise(model, prompt, G, B, steps, mask_id, cache, t, old_loop=cache != "none")


def llada_adablock(model, prompt, G, init_len, mask_id, cache, threshold, delimiter_ids, delimiter_threshold):
    """3.4 AdaBlock generate_adablock{,_prefix_cache,_dual_cache}; returns (x, nfe_history,
    block_history) with per-block NFE."""
    if threshold is None:
        raise ValueError("adablock needs threshold")
    x, P = _init_x(prompt, G, mask_id), len(prompt)
    done, nfe_hist, blk_hist = 0, [], []
    while done < G:
        n0 = model.nfe
        logits, kv = model.full(x)                       # block-start forward
        start = P + done
        length = adablock_block_length(logits, start, G, done, init_len, delimiter_ids, delimiter_threshold)
        blk_hist.append(length)
        end = start + length
        done += length
        rule_adablock(x, 0, logits[:end], x[:end] == mask_id, threshold)  # masks < end
        if cache == "prefix":
            kv = _prefix_cache(kv, start)
        while bool((x[start:end] == mask_id).any()):
            if cache == "none":
                rule_adablock(x, 0, model.full(x)[0][:end], x[:end] == mask_id, threshold)
                continue
            elif cache == "prefix":
                lg = model.prefix(x[start:], start, kv)[:length]
            else:
                lg = model.dual(x[start:end], start, end, kv)
            rule_adablock(x, start, lg, x[start:end] == mask_id, threshold)
        nfe_hist.append(model.nfe - n0)
    return x, nfe_hist, blk_hist


# --------------------------------------------------------------------------- Dream loops (4)

def dream_diffusion(model, prompt, G, steps, mask_id, alg, threshold=None):
    """4.1 Dream _sample (no blocks): maskgit_plus / topk_margin / entropy / origin (steps=1
    only) / confidence_threshold (quota, carry and the steps-extension quirk)."""
    x = _init_x(prompt, G, mask_id)
    timesteps = torch.linspace(1, DREAM_EPS, steps + 1)
    if alg == "origin" and steps != 1:
        raise ValueError("origin with steps > 1 draws positions at random (torch.rand)")
    if alg == "confidence_threshold":
        masks = int((x == mask_id).sum())  # the whole row's masks (prompt masks too)
        if masks % steps:
            raise ValueError(f"masks {masks} must be divisible by steps {steps}")
        quota, carry = masks // steps, 0
    i = 0
    while i < steps:
        mask = x == mask_id
        logits = _dream_shift(model.full(x)[0])
        if alg == "origin":                              # steps == 1: p_transfer = 1
            x[mask] = dream_sample_tokens(logits[mask])[1]
        elif alg == "confidence_threshold":
            conf, x0 = dream_sample_tokens(logits)
            k = quota + carry
            carry = 0
            vals, idx = _topk_indices(conf, mask, k)
            sel = [int(idx[0])] if k > 0 else []
            for j in range(1, k):
                if bool(vals[j] < threshold):
                    if i < steps - 1:
                        carry += 1
                    else:                                # quirk: steps grows inside this loop
                        quota = 0
                        steps += 1
                        carry += 1
                else:
                    sel.append(int(idx[j]))
            _commit(x, 0, sel, x0)
        else:
            conf, x0 = dream_sample_tokens(logits, alg)
            k = dream_transfer_count(int(mask.sum()), timesteps, i, steps)
            if k > 0:
                _commit(x, 0, _topk_indices(conf, mask, k)[1], x0)
        i += 1
    return x


def dream_block_cached(model, prompt, G, B, steps, mask_id, alg, threshold, dual):
    """4.2 Fast-dLLM v1 Dream with cache: block-start forward commits only position start
    (quirk); cached forwards check "block full" after; non-threshold algs use negative
    entropy scores and stop when i == S (after a wasted forward)."""
    x, P = _init_x(prompt, G, mask_id), len(prompt)
    nb, S = _blocks(G, B, steps)
    timesteps = torch.linspace(1, DREAM_EPS, S + 1)
    for b in range(nb):
        s, e = P + b * B, P + (b + 1) * B
        logits, kv = model.full(x)
        x[s] = dream_sample_tokens(_dream_shift(logits)[s:s + 1])[1][0]
        if not dual:
            kv = _prefix_cache(kv, s)
        i = 1
        while True:
            if dual:
                lg = _dream_shift(model.dual(x[s:e], s, e, kv))
            else:
                lg = _dream_shift(model.prefix(x[s:], s, kv))[:B]
            cand = x[s:e] == mask_id
            if alg == "confidence_threshold":
                dream_rule_threshold(x, s, lg, cand, threshold)
            else:
                if i == S:
                    break
                conf, x0 = dream_sample_tokens(lg, "entropy")
                k = dream_transfer_count(int(cand.sum()), timesteps, i, S)
                if k > 0:
                    _commit(x, s, _topk_indices(conf, cand, k)[1], x0)
                i += 1
            if not bool((x[s:e] == mask_id).any()):
                break
    return x


def dream_dparallel(model, prompt, G, B, steps, mask_id, threshold):
    """4.3 dParallel Dream entropy_threshold: full forwards; H = -sum p ln(p + 1e-8) (fp32);
    x0 = argmax(logits); first by H ascending always, others iff H < threshold (strict)."""
    x, P = _init_x(prompt, G, mask_id), len(prompt)
    nb, _ = _blocks(G, B, steps)
    for b in range(nb):
        s, e = P + b * B, P + (b + 1) * B
        while True:
            lg = _dream_shift(model.full(x)[0])[:e]            # candidates: masks before the block's end
            probs = torch.softmax(lg, -1)
            H = -torch.sum(probs * torch.log(probs + 1e-8), -1)
            x0 = lg.argmax(-1)
            cand = x[:e] == mask_id
            k = int((x[s:e] == mask_id).sum())  # current_transfer_tokens: the block's masks
            vals, idx = _topk_indices(H, cand, k, largest=False)
            _commit(x, 0, _first_plus(vals, idx, lambda h: bool(h < threshold)), x0)
            if not bool((x[s:e] == mask_id).any()):
                break
    return x


def dream_adablock(model, prompt, G, init_len, mask_id, threshold, delimiter_ids, delimiter_threshold, dual):
    """4.4 AdaBlock Dream: _sample_adablock (no cache: threshold rule on the block-start
    logits too) / _sample_adablock_cache (dual: only position start on the block-start
    logits, quirk as 4.2). Block length on the shifted block-start logits."""
    x, P = _init_x(prompt, G, mask_id), len(prompt)
    done, nfe_hist, blk_hist = 0, [], []
    while done < G:
        n0 = model.nfe
        start = P + done
        logits, kv = model.full(x)
        logits = _dream_shift(logits)
        length = adablock_block_length(logits, start, G, done, init_len, delimiter_ids, delimiter_threshold)
        blk_hist.append(length)
        done += length
        end = start + length
        if dual:
            x[start] = dream_sample_tokens(logits[start:start + 1])[1][0]
        else:
            dream_rule_threshold(x, 0, logits[:end], x[:end] == mask_id, threshold,
                                 int((x[start:end] == mask_id).sum()))  # masks < end, k = the block's
        while bool((x[start:end] == mask_id).any()):
            if dual:
                lg = _dream_shift(model.dual(x[start:end], start, end, kv))
                dream_rule_threshold(x, start, lg, x[start:end] == mask_id, threshold)
            else:
                lg = _dream_shift(model.full(x)[0])[:end]
                dream_rule_threshold(x, 0, lg, x[:end] == mask_id, threshold, int((x[start:end] == mask_id).sum()))
        nfe_hist.append(model.nfe - n0)
    return x, nfe_hist, blk_hist


# --------------------------------------------------------------------------- entry point (6)

LLADA_SAMPLERS = ("low_confidence", "fixed", "threshold", "factor", "entropy_threshold", "adablock")
DREAM_ALGS = ("maskgit_plus", "topk_margin", "entropy", "origin")
DREAM_SAMPLERS = DREAM_ALGS + ("threshold", "entropy_threshold", "adablock")


def load_model(model: Union[str, Tuple[dict, dict], FullAttentionModel]) -> FullAttentionModel:
    if isinstance(model, FullAttentionModel):
        return model
    if isinstance(model, str):
        return FullAttentionModel.from_path(model)
    cfg, weights = model
    return FullAttentionModel(cfg, weights)


@torch.no_grad()
def reference_generate(model, prompt_ids: Sequence[int], *, family: Optional[str] = None, sampler: str,
                       max_new_tokens: int, steps: Optional[int] = None, block_size: Optional[int] = None,
                       cache: str = "none", threshold: Optional[float] = None, factor: Optional[float] = None,
                       entropy_threshold: Optional[float] = None, delimiter_ids: Optional[Sequence[int]] = None,
                       delimiter_threshold: float = math.inf, mask_id: Optional[int] = None) -> dict:
    """Runs the official sampler named by the section-6 keywords. model: a folder, a
    (cfg, weights) pair or a FullAttentionModel. Returns {"ids": x[P:], "nfe": forwards}
    (+ "block_lengths", "nfe_history" for adablock).

    Defaults where the keyword is None: steps = max_new_tokens; block_size: LLaDA
    max_new_tokens (one block), Dream 32 (4.2, 4.3) / 8 (4.4); Dream threshold 0.9,
    dParallel Dream entropy_threshold 0.5; delimiter_ids: [198] (LLaDA) / the hard-coded
    Qwen2 list (Dream); mask_id: config mask_token_id."""
    m = load_model(model)
    family = (family or m.family).lower()
    if family != m.family:
        raise ValueError(f"family {family!r} does not match the checkpoint ({m.family})")
    if cache not in ("none", "prefix", "dual"):
        raise ValueError(f"unknown cache {cache!r}")
    G, prompt = int(max_new_tokens), [int(t) for t in prompt_ids]
    mask_id = m.mask_id if mask_id is None else mask_id
    steps = G if steps is None else steps
    m.nfe = 0
    extra = {}
    if family == "llada":
        if sampler not in LLADA_SAMPLERS:
            raise ValueError(f"LLaDA has no sampler {sampler!r}")
        B = G if block_size is None else block_size
        if sampler == "low_confidence":
            if cache != "none":
                raise ValueError("low_confidence (ML-GSAI generate) has no cache")
            x = llada_low_confidence(m, prompt, G, B, steps, mask_id)
        elif sampler in ("fixed", "threshold", "factor"):
            if sampler != "fixed" and (threshold if sampler == "threshold" else factor) is None:
                raise ValueError(f"sampler {sampler!r} needs {sampler}")
            x = llada_fastdllm(m, prompt, G, B, steps, mask_id, cache,
                               threshold=threshold if sampler == "threshold" else None,
                               factor=factor if sampler == "factor" else None)
        elif sampler == "entropy_threshold":
            x = llada_dparallel(m, prompt, G, B, steps, mask_id, cache, entropy_threshold)
        else:
            ids = LLADA_DELIMITER_IDS if delimiter_ids is None else list(delimiter_ids)
            x, nh, bh = llada_adablock(m, prompt, G, B, mask_id, cache, threshold, ids, delimiter_threshold)
            extra = {"nfe_history": nh, "block_lengths": bh}
    else:
        if sampler not in DREAM_SAMPLERS:
            raise ValueError(f"Dream has no sampler {sampler!r}")
        if sampler in DREAM_ALGS and cache == "none":
            if block_size is not None:
                raise ValueError("Dream's own algorithms (4.1) have no blocks")
            x = dream_diffusion(m, prompt, G, steps, mask_id, sampler)
        elif sampler == "threshold" and cache == "none":
            if block_size is not None:
                raise ValueError("Dream confidence_threshold without cache (4.1) has no blocks")
            x = dream_diffusion(m, prompt, G, steps, mask_id, "confidence_threshold",
                                0.9 if threshold is None else threshold)
        elif sampler in ("threshold", "maskgit_plus", "topk_margin", "entropy"):
            alg = "confidence_threshold" if sampler == "threshold" else sampler
            x = dream_block_cached(m, prompt, G, 32 if block_size is None else block_size, steps, mask_id, alg,
                                   0.9 if threshold is None else threshold, dual=cache == "dual")
        elif sampler == "origin":
            raise ValueError("Dream origin has no cached variant here")
        elif sampler == "entropy_threshold":
            if cache != "none":
                raise ValueError("dParallel Dream (4.3) has no cache")
            x = dream_dparallel(m, prompt, G, 32 if block_size is None else block_size, steps, mask_id,
                                0.5 if entropy_threshold is None else entropy_threshold)
        else:
            if cache == "prefix":
                raise ValueError("AdaBlock Dream has no prefix-cache variant (only none / dual)")
            ids = DREAM_DELIMITER_IDS if delimiter_ids is None else list(delimiter_ids)
            x, nh, bh = dream_adablock(m, prompt, G, 8 if block_size is None else block_size, mask_id,
                                       0.9 if threshold is None else threshold, ids, delimiter_threshold,
                                       dual=cache == "dual")
            extra = {"nfe_history": nh, "block_lengths": bh}
    out = {"ids": [int(t) for t in x[len(prompt):]], "nfe": m.nfe}
    out.update(extra)
    return out
