"""A picture of the decode order: the answer's tokens laid out by block (one
row per block of B tokens), each coloured by the forward that committed it,
with the tokens per forward of every block. Self-contained HTML, or PNG via
matplotlib (an optional extra)."""
from __future__ import annotations

import colorsys
import html
from typing import List, Optional


def _pieces(result, tokenizer) -> List[str]:
    """The text of each token (decoded alone; byte fragments shown as-is)."""
    if tokenizer is None:
        return [str(t) for t in result.token_ids]
    return [tokenizer.decode([t]) for t in result.token_ids]


def _blocks(steps: List[int], block: int, offset: int):
    """Rows of the layout: (first index, indices) per block of the output.
    offset: how far into its first block the output starts (the prompt's tail)."""
    rows, i = [], 0
    first = block - offset if offset else block
    while i < len(steps):
        n = first if not rows else block
        rows.append(list(range(i, min(len(steps), i + n))))
        i += n
    return rows


def _colour(step: int, last: int) -> str:
    h = 0.66 * (1 - (step - 1) / max(1, last - 1))  # blue (early) .. red (late)
    r, g, b = colorsys.hls_to_rgb(h, 0.78, 0.85)
    return f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"


def render_html(result, tokenizer=None, block_size: int = 32, prompt_tokens: int = 0, title: str = "") -> str:
    steps = result.commit_steps
    pieces = _pieces(result, tokenizer)
    last = max(steps) if steps else 1
    rows = _blocks(steps, block_size, prompt_tokens % block_size if prompt_tokens else 0)
    out = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>fastdllm_rt decode order</title><style>",
           "body{font-family:sans-serif;margin:24px} table{border-collapse:collapse}",
           "td.t{font-family:monospace;padding:3px 4px;border:1px solid #fff;white-space:pre;font-size:13px}",
           "td.b{padding:3px 10px;color:#555;font-size:12px;white-space:nowrap}",
           ".legend span{display:inline-block;width:22px;height:12px}</style></head><body>",
           f"<h3>{html.escape(title or 'Decode order')}</h3>",
           f"<p>{len(result.token_ids)} tokens in {result.num_forwards} forwards "
           f"({result.tokens_per_forward:.2f} tokens per forward). Each row is a block of {block_size}; "
           "colour = the forward that committed the token (blue early, red late; hover for the number).</p>",
           "<p class='legend'>forward 1 " + "".join(
               f"<span style='background:{_colour(s, last)}'></span>" for s in range(1, last + 1, max(1, last // 24)))
           + f" forward {last}</p><table>"]
    for bi, idx in enumerate(rows):
        block_steps = {steps[i] for i in idx}
        tpf = len(idx) / max(1, len(block_steps))
        cells = "".join(
            f"<td class='t' style='background:{_colour(steps[i], last)}' title='forward {steps[i]}'>"
            f"{html.escape(pieces[i]) or '&nbsp;'}</td>" for i in idx)
        out.append(f"<tr><td class='b'>block {bi + 1}<br>{tpf:.1f} tok/fwd</td>{cells}</tr>")
    out.append("</table></body></html>")
    return "\n".join(out)


def render_png(result, path: str, tokenizer=None, block_size: int = 32, prompt_tokens: int = 0,
               title: str = "") -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("a PNG needs matplotlib (pip install matplotlib); use --out FILE.html otherwise") from None
    steps = result.commit_steps
    pieces = _pieces(result, tokenizer)
    last = max(steps) if steps else 1
    rows = _blocks(steps, block_size, prompt_tokens % block_size if prompt_tokens else 0)
    width = block_size
    fig, ax = plt.subplots(figsize=(max(6, width * 0.42), max(2, 0.5 * len(rows) + 1.2)))
    offset0 = block_size - len(rows[0]) if rows and prompt_tokens % block_size else 0
    for r, idx in enumerate(rows):
        for j, i in enumerate(idx):
            x = j + (offset0 if r == 0 else 0)
            ax.add_patch(plt.Rectangle((x, -r - 1), 1, 1, color=_colour(steps[i], last)))
            ax.text(x + 0.5, -r - 0.5, pieces[i].replace("\n", "⏎")[:3], ha="center", va="center", fontsize=7,
                    family="monospace")
        tpf = len(idx) / max(1, len({steps[i] for i in idx}))
        ax.text(width + 0.3, -r - 0.5, f"{tpf:.1f} tok/fwd", va="center", fontsize=8)
    ax.set_xlim(0, width + 4)
    ax.set_ylim(-len(rows) - 0.2, 0.2)
    ax.axis("off")
    ax.set_title(title or f"{len(steps)} tokens, {result.num_forwards} forwards "
                 f"({result.tokens_per_forward:.2f} tokens/forward); colour = committing forward", fontsize=9)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def write_trace(result, path: str, tokenizer=None, block_size: int = 32, prompt_tokens: int = 0,
                title: Optional[str] = None) -> None:
    """HTML or PNG by the file's extension."""
    if path.lower().endswith(".png"):
        render_png(result, path, tokenizer, block_size, prompt_tokens, title or "")
    elif path.lower().endswith((".html", ".htm")):
        with open(path, "w", encoding="utf-8") as f:
            f.write(render_html(result, tokenizer, block_size, prompt_tokens, title or ""))
    else:
        raise ValueError(f"{path}: the trace is written as .html or .png")
