"""fastdllm-rt: command-line front end.

    fastdllm-rt generate MODEL_DIR "prompt"   stream a reply to stdout, stats on stderr
    fastdllm-rt info MODEL_DIR                what the model folder holds and how it will run
    fastdllm-rt demo                          write a tiny random model and stream from it (offline)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

from . import _C
from .engine import Engine
from .generation_config import GenerationConfig
from .loader import read_config


def _add_gen_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("generation (defaults: the model's generation_config.json, else GenerationConfig)")
    g.add_argument("--max-new-tokens", type=int)
    g.add_argument("--block-size", type=int)
    g.add_argument("--sub-block-size", type=int)
    g.add_argument("--threshold", type=float)
    g.add_argument("--use-block-cache", action="store_true", default=None)
    g.add_argument("--temperature", type=float)
    g.add_argument("--top-p", type=float)
    g.add_argument("--top-k", type=int)
    g.add_argument("--seed", type=int)
    p.add_argument("--no-chat", action="store_true", help="feed the prompt as raw text, without the chat template")
    p.add_argument("--dtype", default="auto", help="weight dtype: auto, bfloat16, float16, float32")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, help="CPU threads (default: all cores)")


def _gen_kwargs(a: argparse.Namespace) -> dict:
    keys = ("max_new_tokens", "block_size", "sub_block_size", "threshold", "use_block_cache", "temperature",
            "top_p", "top_k", "seed")
    return {k: getattr(a, k) for k in keys if getattr(a, k) is not None}


def _stream(engine: Engine, prompt: str, a: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    for delta in engine.stream(prompt, chat=False if a.no_chat else None, **_gen_kwargs(a)):
        sys.stdout.write(delta)
        sys.stdout.flush()
    sys.stdout.write("\n")
    dt = time.perf_counter() - t0
    res = engine.last_result
    n = len(res.token_ids)
    print(f"[{n} tokens in {dt:.2f} s: {n / dt:.1f} tokens/s, {res.num_forwards} forwards, "
          f"{res.tokens_per_forward:.2f} tokens/forward, finish: {res.finish_reason}]", file=sys.stderr)
    return 0


def cmd_generate(a: argparse.Namespace) -> int:
    engine = Engine(a.model_dir, device=a.device, dtype=a.dtype, threads=a.threads)
    return _stream(engine, a.prompt, a)


def cmd_info(a: argparse.Namespace) -> int:
    c = read_config(a.model_dir)
    gen = GenerationConfig.from_model_dir(a.model_dir)
    n_params = (c.vocab_size * c.hidden_size * (1 if c.tie_word_embeddings else 2)
                + c.num_hidden_layers * (c.hidden_size * (c.num_attention_heads + 2 * c.num_key_value_heads)
                                         * c.head_dim * 2 + 3 * c.hidden_size * c.intermediate_size))
    info = {
        "model_dir": os.path.abspath(a.model_dir),
        "architecture": {k: getattr(c, k) for k in (
            "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim", "rope_theta", "rms_norm_eps", "tie_word_embeddings")},
        "approx_parameters": n_params,
        "checkpoint_dtype": c.torch_dtype,
        "block_size (bd_size)": c.bd_size,
        "mask_token_id": c.mask_token_id,
        "stop_token_id": c.stop_token_id,
        "tokenizer": os.path.exists(os.path.join(a.model_dir, "tokenizer.json")),
        "generation_defaults": {k: getattr(gen, k) for k in GenerationConfig.FIELDS},
        "runtime": {"cpu_isa": _C.cpu_isa(), "cpu_threads": _C.get_num_threads(), "cuda": _C.cuda_status()},
    }
    print(json.dumps(info, indent=2, default=str))
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from .demo import write_demo_model

    path = a.dir or os.path.join(tempfile.gettempdir(), "fastdllm_rt_demo_model")
    write_demo_model(path)
    print(f"[demo] wrote a tiny RANDOM-WEIGHT model to {path}: the text below is noise, not a language model.\n"
          f"[demo] for real output, download a Fast-dLLM v2 folder and run: fastdllm-rt generate MODEL_DIR \"prompt\"",
          file=sys.stderr)
    engine = Engine(path, threads=a.threads)
    return _stream(engine, a.prompt, a)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fastdllm-rt", description="Run block-diffusion LLMs (Fast-dLLM v2).")
    sub = parser.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="stream a reply from a model folder")
    g.add_argument("model_dir")
    g.add_argument("prompt")
    _add_gen_args(g)
    g.set_defaults(fn=cmd_generate)
    i = sub.add_parser("info", help="describe a model folder and the runtime")
    i.add_argument("model_dir")
    i.set_defaults(fn=cmd_info)
    d = sub.add_parser("demo", help="write a tiny random model (offline) and stream from it")
    d.add_argument("prompt", nargs="?", default="Hello! What can a diffusion LLM do?")
    d.add_argument("--dir", help="where to write the demo model (default: a temp folder)")
    _add_gen_args(d)
    d.set_defaults(fn=cmd_demo)
    a = parser.parse_args(argv)
    try:
        return a.fn(a)
    except (ValueError, TypeError, MemoryError) as e:
        print(f"fastdllm-rt: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
