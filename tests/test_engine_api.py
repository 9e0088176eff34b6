"""The Python API on a model folder with real tokenizer files (the demo writer's
byte-level tokenizer and chat template): streaming, batch generate, chat,
generation config, CLI, and clear errors after which the engine keeps working."""
import json
import os
import subprocess
import sys

import pytest

import fastdllm_rt
from model_factory import make_config, write_model


@pytest.fixture(scope="module")
def engine(demo_dir):
    return fastdllm_rt.Engine(demo_dir)


GEN = dict(max_new_tokens=80, threshold=0.7)


@pytest.mark.parametrize("chat", [True, False])
def test_stream_equals_generate(engine, chat):
    for prompt in ("Hello there", "Ünïcödé 🙂 bytes"):
        streamed = list(engine.stream(prompt, chat=chat, **GEN))
        (res,) = engine.generate([prompt], chat=chat, **GEN)
        assert "".join(streamed) == res.text
        assert len(streamed) > 1  # text arrives in several pieces
        assert engine.last_result.token_ids == res.token_ids
        assert res.num_forwards > 0 and res.tokens_per_forward > 0
        assert res.finish_reason in ("stop", "length") and res.timings["total_s"] > 0


def test_stream_text_is_utf8_safe(engine):
    # The demo model emits arbitrary bytes; a UTF-8 character split across tokens
    # is held back until it is complete, then emitted whole.
    from fastdllm_rt.text import IncrementalDetokenizer
    tok = engine.tokenizer
    euro = list("€".encode())  # 3 bytes = 3 byte-level tokens
    d = IncrementalDetokenizer(tok)
    assert d.update(tok.encode("a")) == "a"
    assert d.update(tok.encode("a") + euro[:1]) == ""
    assert d.update(tok.encode("a") + euro[:2]) == ""
    assert d.update(tok.encode("a") + euro) == "€"
    assert d.update(tok.encode("a") + euro + [0x80]) == ""  # a stray continuation byte...
    assert d.update(tok.encode("a") + euro + [0x80] + tok.encode("b")) == "\ufffdb"  # ...is invalid for good
    assert d.finish(tok.encode("a") + euro + [0x80] + tok.encode("b")) == ""


def test_chat_template_and_messages(engine):
    tok = engine.tokenizer
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}])
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert engine.encode_prompt(msgs) == tok.encode(tok.apply_chat_template(msgs))
    assert engine.encode_prompt("hi") == tok.encode(text)  # chat by default
    assert engine.encode_prompt("hi", chat=False) == tok.encode("hi")
    (a,) = engine.generate([msgs], **GEN)
    assert a.prompt_tokens == len(engine.encode_prompt(msgs))


def test_generate_ids_matches_text_path(engine):
    ids = engine.encode_prompt("Hello there")
    r = engine.generate_ids(ids, **GEN)
    (t,) = engine.generate(["Hello there"], **GEN)
    assert r.token_ids == t.token_ids and r.text is None


def test_generation_config_file(demo_dir, engine):
    g = engine.generation_config
    assert (g.max_new_tokens, g.threshold, g.sub_block_size) == (96, 0.9, 8)  # from generation_config.json
    assert g.block_size is None and engine.config.bd_size == 32


BAD_PARAMS = [
    (dict(sub_block_size=5), "sub_block_size \\(5\\) must divide block_size \\(32\\)"),
    (dict(block_size=48, sub_block_size=7), "sub_block_size \\(7\\) must divide block_size \\(48\\)"),
    (dict(threshold=1.5), r"threshold must be in \[0.0, 1.0\], got 1.5"),
    (dict(threshold=-0.1), "threshold must be in"),
    (dict(max_new_tokens=-1), "max_new_tokens must be an integer >= 0, got -1"),
    (dict(block_size=-32), "block_size must be an integer >= 1"),
    (dict(block_size=24, sub_block_size=8), r"block_size \(24\) must be a multiple of the engine's KV page_size \(16\)"),
    (dict(temperature=-1.0), "temperature must be in"),
    (dict(top_p=0.0), r"top_p must be in \(0.0, 1.0\]"),
    (dict(top_k=-3), "top_k must be an integer >= 0"),
]


@pytest.mark.parametrize("kw,msg", BAD_PARAMS)
def test_bad_generation_parameters(engine, kw, msg):
    with pytest.raises(ValueError, match=msg):
        engine.generate_ids([1, 2, 3], **kw)
    assert engine.generate_ids([1, 2, 3], max_new_tokens=32).num_forwards > 0


def test_unknown_parameter(engine):
    with pytest.raises(TypeError, match="unknown generation parameter 'blocksize'"):
        engine.generate_ids([1], blocksize=32)


def test_bad_prompts(engine):
    with pytest.raises(ValueError, match="the prompt is empty"):
        list(engine.stream(""))
    with pytest.raises(ValueError, match="the prompt is empty"):
        engine.generate_ids([])
    with pytest.raises(ValueError, match="prompt token 9999 at index 1 is outside the vocabulary"):
        engine.generate_ids([1, 9999])
    with pytest.raises(TypeError, match="prompt must be a string or a list of chat messages"):
        engine.generate([42])
    with pytest.raises(ValueError, match="chat message 0 must be a dict with 'role' and 'content'"):
        engine.generate([[{"text": "x"}]])
    assert engine.generate(["ok"], max_new_tokens=32)[0].num_forwards > 0


def test_prompt_longer_than_max_seq_len(demo_dir):
    e = fastdllm_rt.Engine(demo_dir, max_seq_len=64)
    with pytest.raises(ValueError, match="the prompt has 65 tokens, more than max_seq_len=64"):
        e.generate_ids(list(range(65)), max_new_tokens=0)
    with pytest.raises(ValueError, match=r"prompt \(40 tokens\) \+ max_new_tokens \(32\) exceeds max_seq_len=64"):
        e.generate_ids(list(range(40)), max_new_tokens=32)
    assert e.generate_ids(list(range(20)), max_new_tokens=32).num_forwards > 0


def test_memory_budget_exceeded_then_usable(demo_dir):
    e = fastdllm_rt.Engine(demo_dir, max_memory=6 * 8192, kv_dtype="float32")  # 6 KV pages of 16 tokens
    with pytest.raises(fastdllm_rt.MemoryBudgetError,
                       match=r"KV cache budget exceeded: this request needs up to 16 pages .* holds all 6 pages"):
        e.generate_ids(list(range(200)), max_new_tokens=32)
    assert e.stats()["pages_in_use"] == 0  # nothing leaked by the failed request
    r = e.generate_ids(list(range(20)), max_new_tokens=64)
    assert r.num_forwards > 0 and e.stats()["pages_in_use"] == 0


def test_pages_are_reused_across_generations(engine):
    for _ in range(3):
        engine.generate_ids(list(range(50)), max_new_tokens=64)
        assert engine.stats()["pages_in_use"] == 0


def test_bad_engine_arguments(demo_dir, tmp_path):
    with pytest.raises(fastdllm_rt.LoadError, match="not a directory"):
        fastdllm_rt.Engine(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="device must be one of"):
        fastdllm_rt.Engine(demo_dir, device="tpu")
    if not fastdllm_rt.cuda_status()["available"]:
        with pytest.raises(ValueError, match="device='cuda' is not available"):
            fastdllm_rt.Engine(demo_dir, device="cuda")
    with pytest.raises(ValueError, match="max_memory must be a number of bytes"):
        fastdllm_rt.Engine(demo_dir, max_memory="lots")
    with pytest.raises(ValueError, match="smaller than one KV page"):
        fastdllm_rt.Engine(demo_dir, max_memory=100)
    with pytest.raises(fastdllm_rt.LoadError, match="dtype must be one of"):
        fastdllm_rt.Engine(demo_dir, dtype="int8")


def test_no_tokenizer_folder(tmp_path):
    path = write_model(str(tmp_path / "m"), make_config())
    e = fastdllm_rt.Engine(path)
    with pytest.raises(ValueError, match="no tokenizer.json, so text prompts cannot be used"):
        list(e.stream("hello"))
    with pytest.raises(ValueError, match="no tokenizer.json"):
        e.generate(["hello"])
    r = e.generate_ids([1, 2, 3], max_new_tokens=32)
    assert r.text is None and r.num_forwards > 0


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "fastdllm_rt.cli", *args], capture_output=True, text=True,
                          timeout=300)


def test_cli_generate_info_demo(demo_dir, tmp_path):
    r = run_cli("generate", demo_dir, "Hello", "--max-new-tokens", "64", "--threshold", "0.8")
    assert r.returncode == 0, r.stderr
    (res,) = fastdllm_rt.Engine(demo_dir).generate(["Hello"], max_new_tokens=64, threshold=0.8)
    assert r.stdout == res.text + "\n"
    assert "tokens/s" in r.stderr and "tokens/forward" in r.stderr
    r = run_cli("info", demo_dir)
    info = json.loads(r.stdout)
    assert info["architecture"]["hidden_size"] == 64 and info["tokenizer"] is True
    r = run_cli("demo", "--dir", str(tmp_path / "d"), "--max-new-tokens", "32")
    assert r.returncode == 0 and "RANDOM-WEIGHT" in r.stderr and os.path.exists(tmp_path / "d" / "config.json")
    r = run_cli("generate", str(tmp_path / "nope"), "x")
    assert r.returncode == 2 and "not a directory" in r.stderr
    r = run_cli("generate", demo_dir, "x", "--sub-block-size", "5")
    assert r.returncode == 2 and "sub_block_size (5) must divide" in r.stderr
