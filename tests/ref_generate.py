"""PyTorch reference of Fast-dLLM v2 `generate` (fast_dllm_v2.md section 4),
written from the spec's pseudo-code, quirks included: the P0 > B prefill
condition, token shift with the position-0 self-logit, the bs=32 mask of
denoising forwards, strict-> threshold plus the always-one argmax, stop rule (A),
the commit forward and its AR token, final truncation, and the optional block
cache with in-place sub-block K/V overwrite."""
from __future__ import annotations

import torch

from reference import RefQwen2, block_causal_mask, concat_kv


def kv_len(cache):
    return 0 if cache is None else cache[0][0].shape[1]


def _fwd(ref: RefQwen2, ids, c, bs, past):
    L = len(ids)
    return ref.forward(ids, torch.arange(c, c + L), past=past, mask=block_causal_mask(c, L, bs))


def _shift(logits):
    return torch.cat([logits[:1], logits[:-1]], 0)


def _rule(sampler, p, conf, masked, param):
    """The other v2 rules (docs/decoding.md), each always taking the best masked
    position: entropy below, top-1 minus top-2 margin above, or Fast-dLLM v1's
    factor rule on the confidences (full_attention_dllms.md 3.2)."""
    idx = torch.nonzero(masked)[:, 0]
    sel = torch.zeros_like(masked)
    if sampler == "entropy_threshold":
        h = -(p * torch.log(torch.where(p > 0, p, torch.ones_like(p)))).sum(-1)
        hm = h[idx]
        sel[idx] = hm < param
        sel[idx[int(hm.argmin())]] = True
    elif sampler == "margin_threshold":
        top = p.topk(2, -1).values
        m = (top[:, 0] - top[:, 1])[idx]
        sel[idx] = m > param
        sel[idx[int(m.argmax())]] = True
    elif sampler == "factor":
        c = conf[idx]
        order = torch.sort(c, descending=True, stable=True).indices
        n, take = len(order), len(order)
        for r in range(2, n + 1):
            if float(c[order[r - 1]]) < 1 - param / (r + 1):
                take = n if r == n else r - 1
                break
        sel[idx[order[:take]]] = True
    else:
        raise ValueError(sampler)
    return sel


@torch.no_grad()
def ref_generate(ref: RefQwen2, prompt, max_new_tokens, *, block_size=32, small_block_size=8, threshold=1.0,
                 use_block_cache=False, mask_id, stop_token, sampler="threshold", rule_param=None):
    """Returns (generated ids after the prompt, number of model forwards)."""
    B, S = block_size, small_block_size
    nS = B // S
    x = list(int(t) for t in prompt)
    P0 = len(x)
    forwards = 0
    nblocks = max_new_tokens // B
    cache = None
    if P0 > B:
        n = P0 // B * B
        logits, cache = _fwd(ref, x[:n], 0, B, None)
        forwards += 1
        if P0 % B == 0:
            x.append(int(logits[-1].argmax()))

    def stop_a(Pb):
        tail = x[Pb:]
        if stop_token not in tail:
            return False
        return mask_id not in tail[:tail.index(stop_token)]

    for _ in range(nblocks):
        if stop_token in x[P0:]:
            break
        Pb = len(x)
        x += [mask_id] * (B - Pb % B)
        c = kv_len(cache)
        block_cache = None
        while True:
            if stop_a(Pb):
                break
            blk = x[-B:]
            if mask_id not in blk:
                logits, kv = _fwd(ref, blk, c, B, cache)
                forwards += 1
                cache = concat_kv(cache, kv)
                x.append(int(logits[-1].argmax()))
                break
            for sb in range(nS):
                s, e = sb * S, sb * S + S
                while True:
                    blk = x[-B:]
                    if mask_id not in blk[s:e] or stop_a(Pb):
                        break
                    if not use_block_cache:
                        logits, _ = _fwd(ref, blk, c, 32, cache)  # forward's default block_size=32
                        lg = _shift(logits)[s:e]
                    elif block_cache is None or blk[s] == mask_id:
                        logits, block_cache = _fwd(ref, blk, c, 32, cache)
                        lg = _shift(logits)[s:e]
                    else:
                        logits, _ = ref.forward(blk[s:e], torch.arange(c + s, c + e), past=cache,
                                                block_cache=block_cache, replace=s)
                        lg = _shift(logits)
                    forwards += 1
                    p = torch.softmax(lg, -1)
                    tok = p.argmax(-1)
                    # Our one deviation (docs/decoding.md): the mask token is never
                    # written back; the best other token is taken instead.
                    p_no_mask = p.clone()
                    p_no_mask[:, mask_id] = -1.0
                    tok = torch.where(tok == mask_id, p_no_mask.argmax(-1), tok)
                    conf = p.gather(-1, tok[:, None])[:, 0]
                    masked = torch.tensor([t == mask_id for t in blk[s:e]], device=conf.device)
                    conf = torch.where(masked, conf, torch.tensor(float("-inf"), dtype=conf.dtype, device=conf.device))
                    if sampler == "threshold":
                        sel = conf > threshold
                        # Deviation 2 (docs/decoding.md): near-ties (1e-5 relative) of the
                        # always-one rule go to the first position, as exact bf16 ties do upstream.
                        sel[int(torch.nonzero(conf >= conf.max() * (1 - 1e-5))[0])] = True
                    else:
                        sel = _rule(sampler, p.double(), conf.double(), masked, rule_param)
                    sel &= masked
                    base = len(x) - B
                    for j in range(S):
                        if sel[j]:
                            x[base + s + j] = int(tok[j])
    out = x[P0:]
    if stop_token in out:
        out = out[:out.index(stop_token) + 1]
    return out, forwards
