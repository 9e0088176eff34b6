"""The user tools: GenerationResult.commit_steps (the decode order), the
trace picture (self-contained HTML; PNG through matplotlib), fastdllm-rt bench
and the chat REPL, on the demo model."""
import io
import json
import re

import pytest

from fastdllm_rt import Engine
from fastdllm_rt.cli import main as cli_main
from fastdllm_rt.tools.chat import chat_loop
from fastdllm_rt.tools.trace import render_html


@pytest.fixture(scope="module")
def engine(demo_dir):
    e = Engine(demo_dir, max_batch_size=4)
    yield e
    e.close()


@pytest.mark.parametrize("threshold,sub", [(1.0, 8), (0.5, 8), (0.3, 32)])
def test_commit_steps_are_the_decode_order(engine, threshold, sub):
    r = engine.generate(["Hello there, tell me"], max_new_tokens=70, threshold=threshold, sub_block_size=sub)[0]
    steps = r.commit_steps
    assert len(steps) == len(r.token_ids) and all(1 <= s <= r.num_forwards for s in steps)
    per_step = {}
    for s in steps:
        per_step[s] = per_step.get(s, 0) + 1
    if threshold == 1.0:  # one token per denoising forward (plus a commit forward's AR token)
        assert max(per_step.values()) <= 2
    # tokens of a later block are never committed before those of an earlier one
    B = 32
    p0 = r.prompt_tokens
    first_block = B - p0 % B
    blocks = [steps[:first_block]] + [steps[i:i + B] for i in range(first_block, len(steps), B)]
    for a, b in zip(blocks, blocks[1:]):
        if a and b:
            assert max(a) <= min(b) + 1  # the AR token of a commit forward starts the next block
    # batched equals alone, order included
    again = engine.generate(["Hello there, tell me", "Other prompt"], max_new_tokens=70, threshold=threshold,
                            sub_block_size=sub)[0]
    assert again.commit_steps == steps


def test_commit_steps_cut_at_a_stop_string(engine):
    r = engine.generate(["Hello there, tell me"], max_new_tokens=64, threshold=0.5, stop=["e"])[0]
    assert len(r.commit_steps) == len(r.token_ids)


def test_trace_html_is_self_contained(engine, tmp_path):
    ids = engine.encode_prompt("Hello there")
    r = engine.generate_ids(ids, max_new_tokens=64, threshold=0.5)
    page = render_html(r, engine.tokenizer, 32, prompt_tokens=len(ids))
    assert page.count("<td class='t'") == len(r.token_ids)
    assert not re.search(r"(src|href)=['\"]?https?:", page)  # nothing fetched from elsewhere
    assert f"{r.num_forwards} forwards" in page and "tok/fwd" in page
    out = tmp_path / "t.html"
    assert cli_main(["trace", engine.path, "Hello there", "--out", str(out), "--max-new-tokens", "40"]) == 0
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert cli_main(["trace", engine.path, "Hello", "--out", str(tmp_path / "t.svg")]) == 2


def test_trace_png(engine, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "t.png"
    assert cli_main(["trace", engine.path, "Hello there", "--out", str(out), "--max-new-tokens", "40"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 2000


def test_bench_cli(engine, capsys):
    assert cli_main(["bench", engine.path, "--prompts", "4", "--concurrency", "2", "--max-new-tokens", "24",
                     "--quiet"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["generated_tokens"] == 4 * 24 and r["tokens_per_s"] > 0 and r["batched_forwards"] > 0
    assert r["tokens_per_forward"] > 0 and r["time_to_first_token_s"]["p50"] > 0 and r["text"] is True


def test_chat_repl_keeps_the_conversation(engine):
    out = io.StringIO()
    assert chat_loop(engine, io.StringIO("hi\nand then?\n/reset\nagain\n/quit\n"), out, max_new_tokens=16) == 0
    text = out.getvalue()
    assert text.count("tokens/forward") == 3 and "(conversation cleared)" in text
    second = engine.generate([[{"role": "user", "content": "hi"}]], max_new_tokens=16)[0]
    follow = engine.generate([[{"role": "user", "content": "hi"}, {"role": "assistant", "content": second.text},
                               {"role": "user", "content": "and then?"}]], max_new_tokens=16)[0]
    assert second.text in text and follow.text in text  # the second reply saw the first exchange


def test_mask_token_in_the_prompt_tail(engine):
    """The first block starts inside the prompt when its length is not a
    multiple of the block size; a prompt position holding the mask token is
    then denoised too (as upstream) and must not be taken for output."""
    m = engine.config.mask_token_id
    for prompt in ([5, 6, m, 7], [m] * 5, [9] * 31 + [m]):
        r = engine.generate_ids(prompt, max_new_tokens=40, threshold=0.5)
        assert len(r.commit_steps) == len(r.token_ids) == 40
        assert all(1 <= s <= r.num_forwards for s in r.commit_steps)
