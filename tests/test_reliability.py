"""Hardening: every bad input is a clear error naming the problem, nothing
crashes, hangs or returns garbage, and the engine stays usable and exact.
Lengths a user can predict (max_new_tokens = up to this many), interrupts
that land within a step and free the request's pages, non-finite weights and
activations caught, configs and files fuzzed in subprocesses (a crash is a
failure, not a lost process), and the CLI a user expects."""
import _thread
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

import fastdllm_rt
from fastdllm_rt import GenerationError
from model_factory import make_config, random_weights, write_model

MASK, STOP = 330, 329


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_model(str(tmp_path_factory.mktemp("rel")), make_config(), seed=7)


@pytest.fixture(scope="module")
def engine(model_dir):
    e = fastdllm_rt.Engine(model_dir)
    yield e
    e.close()


# ---- lengths ------------------------------------------------------------------

@pytest.mark.parametrize("plen", [5, 32, 41, 64])
@pytest.mark.parametrize("B,S", [(32, 8), (16, 4)])
def test_max_new_tokens_means_up_to_that_many(engine, plen, B, S):
    """length_rule="tokens" (the default): exactly max_new_tokens new tokens
    unless a stop token comes first, and they are the official loop's first
    tokens (the rule only decides where to stop)."""
    prompt = list(np.random.default_rng(plen).integers(0, MASK, plen))
    kw = dict(block_size=B, sub_block_size=S, threshold=0.7, stop_token_id=STOP)
    long = engine.generate_ids(prompt, max_new_tokens=256, length_rule="upstream", **kw).token_ids
    for n in (1, 2, 15, 16, 31, 33, 96):
        r = engine.generate_ids(prompt, max_new_tokens=n, **kw)
        assert r.token_ids == long[:n], n
        want_reason = "stop" if STOP in long[:n] else "length"
        assert r.finish_reason == want_reason and len(r.token_ids) == (n if want_reason == "length" else
                                                                       long.index(STOP) + 1)
    r = engine.generate_ids(prompt, max_new_tokens=0, **kw)
    assert r.token_ids == [] and r.num_forwards == 0 and r.finish_reason == "length"


def test_upstream_length_rule_is_kept(engine):
    """The official count: P0=20, B=32, max_new=96 -> 3 blocks -> 77 new tokens."""
    r = engine.generate_ids(list(range(20)), max_new_tokens=96, length_rule="upstream", stop_token_id=None,
                            threshold=0.9)
    assert r.finish_reason == "length" and len(r.token_ids) == 77  # this seed never emits the stop token
    with pytest.raises(ValueError, match="length_rule must be one of"):
        engine.generate_ids([1, 2], length_rule="blocks")


# ---- errors that name the problem ----------------------------------------------

@pytest.mark.parametrize("kw,msg", [
    (dict(block_size=2 ** 40), "block_size must be at most 4096"),
    (dict(sub_block_size=2 ** 33), "sub_block_size must be at most 4096"),
    (dict(max_new_tokens=2 ** 40), "max_new_tokens must be at most 2147483647"),
    (dict(top_k=2 ** 40), "top_k must be at most"),
    (dict(seed=2 ** 70), "seed must be at most"),
    (dict(seed=-1), "seed must be an integer >= 0"),
    (dict(stop_token_id=2 ** 33), "stop_token_id must be at most"),
    (dict(temperature=float("inf")), r"temperature must be in \[0.0, 1000000.0\]"),
    (dict(threshold=float("nan")), "threshold must be in"),
    (dict(stop=[""]), "stop must be a non-empty string or a list of them"),
    (dict(stop=5), "stop must be a non-empty string"),
    (dict(mask_token_id=STOP, stop_token_id=STOP), "stop_token_id and mask_token_id are both 329"),
    (dict(sampler="entropy_x"), "sampler must be one of"),
])
def test_bad_parameters_name_themselves_and_change_nothing(engine, kw, msg):
    prompt = [3, 1, 4, 1, 5, 9, 2, 6]
    before = engine.generate_ids(prompt, max_new_tokens=40, stop_token_id=STOP)
    with pytest.raises((ValueError, TypeError), match=msg):
        engine.generate_ids(prompt, **kw)
    after = engine.generate_ids(prompt, max_new_tokens=40, stop_token_id=STOP)
    assert (after.token_ids, after.num_forwards) == (before.token_ids, before.num_forwards)
    assert engine.stats()["pages_in_use"] == 0


def test_engine_arguments_that_do_not_fit(model_dir):
    for kw, msg in ((dict(max_memory=10 ** 30), "asks for .* KV pages; at most 2\\*\\*31 - 1"),
                    (dict(max_seq_len=2 ** 40), "max_seq_len must be at most"),
                    (dict(page_size=2 ** 33), "page_size must be at most 4096"),
                    (dict(max_batch_tokens=2 ** 40), "max_batch_tokens must be at most"),
                    (dict(threads=True), "threads must be a positive integer")):
        with pytest.raises(ValueError, match=msg):
            fastdllm_rt.Engine(model_dir, **kw)


def test_prompt_ids_that_do_not_fit_name_their_index(engine):
    with pytest.raises(ValueError, match=r"prompt token 4294967296 at index 2 is outside the vocabulary"):
        engine.generate_ids([1, 2, 2 ** 32])
    with pytest.raises(ValueError, match=r"prompt token -1 at index 0 is outside the vocabulary"):
        engine.generate_ids([-1])
    with pytest.raises(TypeError, match="prompt ids must be a sequence of integers"):
        engine.generate_ids(["a", "b"])


def test_text_inputs_are_checked(demo_dir, tmp_path):
    e = fastdllm_rt.Engine(demo_dir)
    with pytest.raises(TypeError, match="prompts must be a prompt or a list of prompts, got dict"):
        e.generate({"role": "user", "content": "hi"})
    with pytest.raises(TypeError, match="prompt must be a string or a list of chat messages, got dict"):
        e.stream({"role": "user", "content": "hi"})
    with pytest.raises(ValueError, match="chat message 0: 'role' and 'content' must be strings"):
        e.generate([[{"role": "user", "content": 5}]])
    e.close()
    # generation_config.json of the wrong shape or type names the file and key
    d = tmp_path / "m"
    shutil.copytree(demo_dir, d)
    (d / "generation_config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"generation_config\.json: expected a JSON object, got list"):
        fastdllm_rt.Engine(str(d))
    (d / "generation_config.json").write_text('{"threshold": "high"}')
    with pytest.raises(ValueError, match=r"generation_config\.json: threshold must be in"):
        fastdllm_rt.Engine(str(d))
    os.remove(d / "generation_config.json")
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    (d / "tokenizer_config.json").write_text("{broken")
    with pytest.raises(ValueError, match=r"tokenizer_config\.json: not valid JSON"):
        fastdllm_rt.Engine(str(d))
    (d / "tokenizer_config.json").write_text(json.dumps(dict(cfg, chat_template=7)))
    with pytest.raises(ValueError, match=r"tokenizer_config\.json: 'chat_template' must be a string or a list"):
        fastdllm_rt.Engine(str(d))
    # Hugging Face's list form: the template named "default" is the chat template
    (d / "tokenizer_config.json").write_text(json.dumps(dict(cfg, chat_template=[
        {"name": "tool_use", "template": "TOOLS"}, {"name": "default", "template": cfg["chat_template"]}])))
    e = fastdllm_rt.Engine(str(d))
    with fastdllm_rt.Engine(demo_dir) as demo:
        assert e.encode_prompt("hi") == demo.encode_prompt("hi")
    e.close()
    # a template that does not compile, or fails while rendering, names itself
    (d / "tokenizer_config.json").write_text(json.dumps(dict(cfg, chat_template="{% for m in messages %}")))
    e = fastdllm_rt.Engine(str(d))
    with pytest.raises(ValueError, match=r"chat template in .*tokenizer_config\.json 'chat_template':"):
        e.generate(["hi"])
    (d / "tokenizer_config.json").write_text(json.dumps(dict(cfg, chat_template="{{ raise_exception('no') }}")))
    e = fastdllm_rt.Engine(str(d))
    with pytest.raises(ValueError, match=r"chat template in .*: no"):
        e.generate(["hi"])


# ---- non-finite weights and activations ---------------------------------------------

def test_overflowing_activations_fail_the_request_not_the_engine(tmp_path, model_dir):
    cfg = make_config()
    w = random_weights(cfg, seed=7)
    w["model.layers.0.self_attn.o_proj.weight"] = torch.full_like(w["model.layers.0.self_attn.o_proj.weight"], 3e38)
    bad = fastdllm_rt.Engine(write_model(str(tmp_path / "overflow"), cfg, w))
    with pytest.raises(GenerationError, match="produced non-finite logits"):
        bad.generate_ids(list(range(40)), max_new_tokens=32)
    st = bad.stats()
    assert st["pages_in_use"] == 0 and st["requests_failed"] == 1
    good = fastdllm_rt.Engine(model_dir)
    assert good.generate_ids(list(range(40)), max_new_tokens=32).num_forwards > 0


# ---- interrupts ----------------------------------------------------------------------
# A shell starts background jobs (`cmd &`, nohup) with SIGINT ignored, and Python then
# installs no KeyboardInterrupt handler (nor does a child it starts): these tests set
# the disposition a terminal gives, so that they test Ctrl-C however pytest was started.

@pytest.fixture
def sigint_raises():
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


def _sigint_default():  # in the child, before exec: Python then installs its handler
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_lands_within_a_step_and_frees_the_pages(demo_dir, sigint_raises):
    e = fastdllm_rt.Engine(demo_dir)
    for call in (lambda: e.generate(["Hello"] * 3, max_new_tokens=4000, threshold=1.0),
                 lambda: list(e.stream("Hello", max_new_tokens=4000, threshold=1.0))):
        t0 = time.time()
        timer = threading.Timer(0.5, _thread.interrupt_main)
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                call()
        finally:
            timer.cancel()  # a call that ended first must not interrupt a later test
        assert time.time() - t0 < 5.0
        # freed before the exception reached us, although its traceback is alive here
        assert e.stats()["pages_in_use"] == 0
    assert e.generate(["Hello"], max_new_tokens=16)[0].token_ids


# ---- fuzzing the config (each case in a subprocess) ------------------------------------

CONFIG_PROBE = r"""
import sys
import fastdllm_rt
try:
    m = fastdllm_rt.load_model(sys.argv[1])
    print("loaded")
except fastdllm_rt.LoadError as e:
    print("error", str(e).splitlines()[0][:300])
"""

ODD_VALUES = [None, -1, 0, 1, 2 ** 31, 2 ** 63, 2 ** 64 + 5, 1e30, -1e30, float("inf"), float("nan"), "7", "x", True,
              [], {}, [1, 2], 0.5]


def test_config_fuzz_never_crashes(model_dir, tmp_path):
    rng = random.Random(1312)
    base = json.loads(open(os.path.join(model_dir, "config.json")).read())
    keys = ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim", "rope_theta", "rms_norm_eps", "tie_word_embeddings", "mask_token_id",
            "eos_token_id", "stop_token_id", "bd_size", "max_position_embeddings", "rope_scaling", "model_type",
            "hidden_act", "use_sliding_window", "torch_dtype"]
    cases = []
    for i in range(40):
        cfg = dict(base)
        for _ in range(rng.choice([1, 1, 2])):
            cfg[rng.choice(keys)] = rng.choice(ODD_VALUES)
        d = tmp_path / f"c{i}"
        d.mkdir()
        os.symlink(os.path.join(model_dir, "model.safetensors"), d / "model.safetensors")
        (d / "config.json").write_text(json.dumps(cfg))
        cases.append((cfg, str(d)))
    loaded = 0
    for cfg, d in cases:
        r = subprocess.run([sys.executable, "-c", CONFIG_PROBE, d], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"crash (exit {r.returncode}) on {cfg}: {r.stderr[-1500:]}"
        assert r.stdout.startswith(("loaded", "error")), r.stdout
        if r.stdout.startswith("error"):
            assert "config.json" in r.stdout or "model.safetensors" in r.stdout or "tensor" in r.stdout, r.stdout
        loaded += r.stdout.startswith("loaded")
    assert loaded < len(cases)


# ---- the CLI ------------------------------------------------------------------------

def cli(*args, input=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "fastdllm_rt.cli", *args], capture_output=True, text=True,
                          input=input, timeout=timeout)


def test_cli_version_stdin_stop_and_lengths(demo_dir):
    r = cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"fastdllm-rt {fastdllm_rt.__version__}"
    r = cli("generate", demo_dir, "-", "--max-new-tokens", "16", input="Hello from stdin")
    assert r.returncode == 0, r.stderr
    e = fastdllm_rt.Engine(demo_dir)
    want = e.generate(["Hello from stdin"], max_new_tokens=16)[0]
    assert r.stdout == want.text + "\n" and len(want.token_ids) == 16 and want.text.strip()  # visible text
    # a stop string ends the reply before it (the demo model writes letters and spaces)
    stop = want.text[5:7]
    r = cli("generate", demo_dir, "Hello from stdin", "--max-new-tokens", "16", "--stop", stop, "--stop", "zzzz")
    assert r.returncode == 0 and r.stdout == want.text[:want.text.index(stop)] + "\n"
    assert "finish: stop" in r.stderr
    r = cli("generate", demo_dir, "x" * 100, "--max-seq-len", "64")
    assert r.returncode == 2 and "more than max_seq_len=64" in r.stderr
    r = cli("generate", demo_dir, "hi", "--max-memory", "10")
    assert r.returncode == 2 and "smaller than one KV page" in r.stderr


def test_cli_user_errors_are_one_line(demo_dir, tmp_path):
    for args in (("generate", str(tmp_path / "nope"), "x"), ("generate", demo_dir, "x", "--threshold", "7"),
                 ("generate", demo_dir, "x", "--threads", "100000"), ("generate", demo_dir, "-")):
        r = cli(*args, input="")
        assert r.returncode == 2, (args, r.stderr)
        assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1, (args, r.stderr)
    d = tmp_path / "trunc"
    shutil.copytree(demo_dir, d)
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[:-100])
    r = cli("info", str(d))
    assert r.returncode == 2 and "truncated file" in r.stderr
    r = cli("demo", "--dir", str(tmp_path / "dd"), "--device", "tpu")
    assert r.returncode == 2 and "device must be one of" in r.stderr
    r = cli("demo", "--dir", str(tmp_path / "dd"), "--dtype", "int3")
    assert r.returncode == 2 and "dtype must be one of" in r.stderr
    info = json.loads(cli("info", demo_dir).stdout)
    assert info["runtime"]["cpu_threads"] >= 1 and info["checkpoint"]["tensors_checked"]


def test_cli_closed_pipe_and_ctrl_c(demo_dir):
    # | head: the reader goes away; the CLI stops quietly
    p = subprocess.Popen(f"{sys.executable} -m fastdllm_rt.cli generate {demo_dir} hi --max-new-tokens 3000 "
                         f"--threshold 1.0 | head -c 5", shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    out, err = p.communicate(timeout=120)
    assert len(out) == 5 and "Traceback" not in err and "BrokenPipe" not in err
    # Ctrl-C: exit 130 within a step, no traceback
    p = subprocess.Popen([sys.executable, "-m", "fastdllm_rt.cli", "generate", demo_dir, "hi", "--max-new-tokens",
                          "100000", "--max-seq-len", "200000", "--threshold", "1.0"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, preexec_fn=_sigint_default)
    try:
        assert p.stdout.read(3)  # it is streaming
        t0 = time.time()
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
        assert p.returncode == 130 and "Traceback" not in err and time.time() - t0 < 10
    finally:
        if p.poll() is None:  # a failure must not leave a generator running
            p.kill()
            p.communicate()


def test_stop_strings_in_every_api(demo_dir):
    import asyncio
    e = fastdllm_rt.Engine(demo_dir)
    full = e.generate(["Tell me"], max_new_tokens=40)[0]
    stop = full.text[10:12]
    cut = full.text[:full.text.index(stop)]
    (r,) = e.generate(["Tell me"], max_new_tokens=40, stop=[stop, "@@"])
    assert r.text == cut and r.finish_reason == "stop"
    assert e.tokenizer.decode(r.token_ids).startswith(cut + stop)  # the ids end with the token completing it
    assert "".join(e.stream("Tell me", max_new_tokens=40, stop=stop)) == cut

    async def a():
        return "".join([d async for d in e.astream("Tell me", max_new_tokens=40, stop=stop)]), \
            await e.agenerate(["Tell me", "Other"], max_new_tokens=40, stop=stop)
    text, res = asyncio.run(a())
    assert text == cut and res[0].text == cut
    assert e.stats()["pages_in_use"] == 0
    assert e.generate(["Tell me"], max_new_tokens=40, stop="zzzzz")[0].text == full.text
