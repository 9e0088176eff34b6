"""fastdllm-rt: command-line front end.

    fastdllm-rt generate MODEL_DIR "prompt"   stream a reply to stdout, stats on stderr ("-": the prompt from stdin)
    fastdllm-rt info MODEL_DIR                what the model folder holds (every tensor header checked) and how it runs
    fastdllm-rt demo                          write a tiny random model and stream from it (offline)
    fastdllm-rt --version

A user error (a bad folder, parameter or prompt) prints one line and exits 2;
a failure while generating exits 1; Ctrl-C exits 130; a closed pipe (`| head`)
ends quietly.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

from . import __version__, _C
from .engine import Engine, GenerationError, default_threads, max_threads, physical_cores
from .errors import LoadError
from .generation_config import GenerationConfig
from .families import SAMPLERS
from .loader import check_checkpoint, read_config


def _add_gen_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("generation (defaults: the model's generation_config.json, else GenerationConfig)")
    g.add_argument("--max-new-tokens", type=int, help="up to this many new tokens")
    g.add_argument("--length-rule", choices=GenerationConfig.LENGTH_RULES,
                   help="'tokens' (default): up to --max-new-tokens; 'upstream': the official loop's block count")
    g.add_argument("--block-size", type=int)
    g.add_argument("--sub-block-size", type=int)
    g.add_argument("--threshold", type=float)
    g.add_argument("--sampler", help="decode rule; per family: " + "; ".join(
        f"{fam}: {', '.join(names)}" for fam, names in SAMPLERS.items()) + " (the first is the default)")
    g.add_argument("--steps", type=int, help="LLaDA / Dream: the official step count (default: --max-new-tokens)")
    g.add_argument("--cache", choices=GenerationConfig.CACHES, help="LLaDA / Dream: Fast-dLLM v1's cache")
    g.add_argument("--entropy-threshold", type=float, help="sampler entropy_threshold (nats)")
    g.add_argument("--margin-threshold", type=float, help="sampler margin_threshold (top-1 minus top-2)")
    g.add_argument("--factor", type=float, help="sampler factor (Fast-dLLM v1)")
    g.add_argument("--delimiter-ids", type=lambda v: [int(t) for t in v.split(",")], metavar="ID,ID",
                   help="sampler adablock: delimiter token ids")
    g.add_argument("--delimiter-threshold", type=float, help="sampler adablock: delimiter confidence to cut a block")
    g.add_argument("--use-block-cache", action="store_true", default=None)
    g.add_argument("--temperature", type=float)
    g.add_argument("--top-p", type=float)
    g.add_argument("--top-k", type=int)
    g.add_argument("--seed", type=int)
    g.add_argument("--stop", action="append", metavar="TEXT",
                   help="end the reply before this text (may be given several times)")
    p.add_argument("--no-chat", action="store_true", help="feed the prompt as raw text, without the chat template")
    e = p.add_argument_group("engine")
    e.add_argument("--dtype", default="auto", help="weight dtype: auto, bfloat16, float16, float32")
    e.add_argument("--device", default="auto", help="auto, cpu or cuda")
    e.add_argument("--threads", type=int, help=f"CPU threads (default: the physical cores, {physical_cores()} here)")
    e.add_argument("--max-seq-len", type=int, help="longest prompt + reply")
    e.add_argument("--max-memory", help="KV-cache budget, e.g. 2GB")
    e.add_argument("--lm-head", choices=("int8",), help="store the output head as int8 (one scale per row)")
    e.add_argument("--quantize", choices=("int8", "int4", "fp8"),
                   help="quantize a float model's layer matrices at load (round to nearest; fp8: CUDA, W8A8)")


def _gen_kwargs(a: argparse.Namespace) -> dict:
    keys = ("max_new_tokens", "length_rule", "block_size", "sub_block_size", "threshold", "sampler", "steps", "cache",
            "entropy_threshold", "margin_threshold", "factor", "delimiter_ids", "delimiter_threshold",
            "use_block_cache", "temperature", "top_p", "top_k", "seed", "stop")
    return {k: getattr(a, k) for k in keys if getattr(a, k) is not None}


def _engine(path: str, a: argparse.Namespace) -> Engine:
    return Engine(path, device=a.device, dtype=a.dtype, threads=a.threads, max_seq_len=a.max_seq_len,
                  max_memory=a.max_memory, quantize=a.quantize, lm_head=a.lm_head)


def _prompt(text: str) -> str:
    if text != "-":
        return text
    data = sys.stdin.read()
    if not data.strip():
        raise ValueError("the prompt read from stdin is empty")
    return data


def _stream(engine: Engine, prompt: str, a: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    stream = engine.stream(prompt, chat=False if a.no_chat else None, **_gen_kwargs(a))
    try:
        for delta in stream:
            sys.stdout.write(delta)
            sys.stdout.flush()
        sys.stdout.write("\n")
        sys.stdout.flush()
    finally:
        stream.close()  # Ctrl-C or a closed pipe: the request stops at once
    dt = time.perf_counter() - t0
    res = stream.result
    n = len(res.token_ids)
    print(f"[{n} tokens in {dt:.2f} s: {n / dt:.1f} tokens/s, {res.num_forwards} forwards, "
          f"{res.tokens_per_forward:.2f} tokens/forward, finish: {res.finish_reason}]", file=sys.stderr)
    return 0


def cmd_generate(a: argparse.Namespace) -> int:
    prompt = _prompt(a.prompt)
    with _engine(a.model_dir, a) as engine:
        return _stream(engine, prompt, a)


def cmd_info(a: argparse.Namespace) -> int:
    c = read_config(a.model_dir)
    files = check_checkpoint(a.model_dir, c)  # every tensor header against the config: a bad file exits 2 here
    gen = GenerationConfig.from_model_dir(a.model_dir, c.family)
    n_params = (c.vocab_size * c.hidden_size * (1 if c.tie_word_embeddings else 2)
                + c.num_hidden_layers * (c.hidden_size * (c.num_attention_heads + 2 * c.num_key_value_heads)
                                         * c.head_dim * 2 + 3 * c.hidden_size * c.intermediate_size))
    info = {
        "model_dir": os.path.abspath(a.model_dir),
        "family": c.family,
        "samplers": list(SAMPLERS[c.family]),
        "architecture": {k: getattr(c, k) for k in (
            "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim", "rope_theta", "rms_norm_eps", "tie_word_embeddings")},
        "approx_parameters": n_params,
        "checkpoint_dtype": c.torch_dtype,
        "quantization": None if c.quant is None else dict(vars(c.quant), weight_format=c.quant.weight_format),
        "checkpoint": {"files": sorted(os.path.basename(p) for p in files), "tensors_checked": True},
        "block_size (bd_size)": c.bd_size,
        "mask_token_id": c.mask_token_id,
        "stop_token_id": c.stop_token_id,
        "tokenizer": os.path.exists(os.path.join(a.model_dir, "tokenizer.json")),
        "generation_defaults": {k: getattr(gen, k) for k in GenerationConfig.FIELDS},
        "runtime": {"version": __version__, "cpu_isa": _C.cpu_isa(), "cpu_threads": default_threads(),
                    "physical_cores": physical_cores(), "logical_cpus": os.cpu_count(),
                    "max_threads": max_threads(), "cuda": _C.cuda_status()},
    }
    print(json.dumps(info, indent=2, default=str))
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from .demo import write_demo_model

    path = a.dir or os.path.join(tempfile.gettempdir(), "fastdllm_rt_demo_model")
    write_demo_model(path)
    print(f"[demo] wrote a tiny RANDOM-WEIGHT model to {path}: the text below is noise (random letters), "
          "not a language model.\n"
          f"[demo] for real output, download a Fast-dLLM v2 folder and run: fastdllm-rt generate MODEL_DIR \"prompt\"",
          file=sys.stderr)
    with _engine(path, a) as engine:
        return _stream(engine, _prompt(a.prompt), a)


def cmd_serve(a: argparse.Namespace) -> int:
    try:
        from .serve.server import serve
    except ImportError as e:
        raise ValueError(f"serving needs the 'serve' extra ({e.name} is missing): "
                         "pip install 'fastdllm_rt[serve]'") from None
    api_key = a.api_key or os.environ.get("FASTDLLM_API_KEY")
    serve(a.model_dir, host=a.host, port=a.port, model_name=a.model_name, api_key=api_key, max_queue=a.max_queue,
          drain_timeout=a.drain_timeout, device=a.device, dtype=a.dtype, threads=a.threads,
          max_seq_len=a.max_seq_len, max_memory=a.max_memory, quantize=a.quantize, lm_head=a.lm_head,
          max_batch_size=a.max_batch_size)
    return 0


def cmd_bench(a: argparse.Namespace) -> int:
    from .tools.bench import run_bench

    with _engine(a.model_dir, a) as engine:
        report = run_bench(engine, prompts=a.prompts, concurrency=a.concurrency, max_new_tokens=a.max_new_tokens,
                           progress=not a.quiet, **{k: v for k, v in _gen_kwargs(a).items() if k != "max_new_tokens"})
    report.update(model_dir=os.path.abspath(a.model_dir), cpu_isa=_C.cpu_isa(), device=engine.device)
    print(json.dumps(report, indent=2))
    return 0


def cmd_trace(a: argparse.Namespace) -> int:
    from .tools.trace import write_trace

    with _engine(a.model_dir, a) as engine:
        ids = engine.encode_prompt(_prompt(a.prompt), chat=not a.no_chat)
        r = engine.generate_ids(ids, **_gen_kwargs(a))
        bs = a.block_size or engine.config.bd_size
        write_trace(r, a.out, engine.tokenizer, bs, prompt_tokens=len(ids), title=f"{os.path.basename(a.model_dir)}")
    print(f"{a.out}: {len(r.token_ids)} tokens, {r.num_forwards} forwards, "
          f"{r.tokens_per_forward:.2f} tokens per forward", file=sys.stderr)
    return 0


def cmd_chat(a: argparse.Namespace) -> int:
    from .tools.chat import chat_loop

    with _engine(a.model_dir, a) as engine:
        return chat_loop(engine, system=a.system, **_gen_kwargs(a))


def cmd_quantize(a: argparse.Namespace) -> int:
    from .quant.quantize import quantize_model

    summary = quantize_model(a.model_dir, a.out_dir, format=a.format, group_size=a.group_size, method=a.method,
                             calib_file=a.calib_file, calib_samples=a.calib_samples, calib_seq_len=a.calib_seq_len,
                             act_order=a.act_order, progress=not a.quiet)
    print(json.dumps(summary, indent=2))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fastdllm-rt", description="Run block-diffusion LLMs (Fast-dLLM v2).")
    parser.add_argument("--version", action="version", version=f"fastdllm-rt {__version__}")
    sub = parser.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="stream a reply from a model folder")
    g.add_argument("model_dir")
    g.add_argument("prompt", help='the prompt, or "-" to read it from stdin')
    _add_gen_args(g)
    g.set_defaults(fn=cmd_generate)
    i = sub.add_parser("info", help="describe a model folder (checking every tensor header) and the runtime")
    i.add_argument("model_dir")
    i.set_defaults(fn=cmd_info)
    d = sub.add_parser("demo", help="write a tiny random model (offline) and stream from it")
    d.add_argument("prompt", nargs="?", default="Hello! What can a diffusion LLM do?")
    d.add_argument("--dir", help="where to write the demo model (default: a temp folder)")
    _add_gen_args(d)
    d.set_defaults(fn=cmd_demo)
    b = sub.add_parser("bench", help="throughput of a model folder: tokens/s, tokens per forward, time to first token")
    b.add_argument("model_dir")
    b.add_argument("--prompts", type=int, default=16)
    b.add_argument("--concurrency", type=int, default=4)
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_gen_args(b)
    b.set_defaults(fn=cmd_bench, max_new_tokens=128)
    t = sub.add_parser("trace", help="a picture of the decode order (HTML, or PNG with matplotlib)")
    t.add_argument("model_dir")
    t.add_argument("prompt")
    t.add_argument("--out", required=True, help="FILE.html or FILE.png")
    _add_gen_args(t)
    t.set_defaults(fn=cmd_trace)
    c = sub.add_parser("chat", help="a chat REPL that keeps the conversation")
    c.add_argument("model_dir")
    c.add_argument("--system", help="a system message")
    _add_gen_args(c)
    c.set_defaults(fn=cmd_chat)
    sv = sub.add_parser("serve", help="an OpenAI-compatible HTTP server (needs the 'serve' extra)")
    sv.add_argument("model_dir")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (default: $FASTDLLM_API_KEY, else none)")
    sv.add_argument("--model-name", help="the model id clients send (default: the folder's name)")
    sv.add_argument("--max-batch-size", type=int, default=16, help="requests decoded together")
    sv.add_argument("--max-queue", type=int, default=256, help="waiting requests beyond this get 503")
    sv.add_argument("--drain-timeout", type=float, default=30.0,
                    help="seconds in-flight requests get to finish on SIGTERM")
    e = sv.add_argument_group("engine")
    e.add_argument("--dtype", default="auto")
    e.add_argument("--device", default="auto")
    e.add_argument("--threads", type=int)
    e.add_argument("--max-seq-len", type=int)
    e.add_argument("--max-memory")
    e.add_argument("--quantize", choices=("int8", "int4", "fp8"))
    e.add_argument("--lm-head", choices=("int8",))
    sv.set_defaults(fn=cmd_serve)
    q = sub.add_parser("quantize", help="write an int8 / int4 copy of a float model folder (GPTQ or AWQ layout)")
    q.add_argument("model_dir")
    q.add_argument("out_dir")
    q.add_argument("--format", choices=("int8", "int4"), default="int4")
    q.add_argument("--group-size", type=int, help="inputs per scale group (default: 128 for int4, per channel for int8)")
    q.add_argument("--method", choices=("rtn", "gptq", "awq"), default="rtn")
    q.add_argument("--act-order", action="store_true", help="GPTQ: quantize inputs in decreasing Hessian order")
    q.add_argument("--calib-file", help="calibration text (GPTQ / AWQ; default: built-in prompts and the model's "
                                        "own continuations)")
    q.add_argument("--calib-samples", type=int, default=64, help="calibration sequences")
    q.add_argument("--calib-seq-len", type=int, default=256, help="tokens per calibration sequence")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(fn=cmd_quantize)
    a = parser.parse_args(argv)
    try:
        return a.fn(a)
    except (ValueError, TypeError, MemoryError, LoadError) as e:  # the user's input: one line, no traceback
        print(f"fastdllm-rt: error: {e}", file=sys.stderr)
        return 2
    except GenerationError as e:
        print(f"fastdllm-rt: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep Python's exit
        # flush from complaining about the closed stdout.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
