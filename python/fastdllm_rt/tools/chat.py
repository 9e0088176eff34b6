"""``fastdllm-rt chat``: a REPL that keeps the conversation, streams each
reply and prints tokens/s and tokens per forward after it. /reset clears the
conversation, /quit (or Ctrl-D) leaves."""
from __future__ import annotations

import sys
import time
from typing import List, Optional, TextIO


def chat_loop(engine, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout, system: Optional[str] = None,
              **gen) -> int:
    if engine.tokenizer is None:
        raise ValueError(f"{engine.path}: chat needs the model's tokenizer.json")
    history: List[dict] = [{"role": "system", "content": system}] if system else []
    stdout.write("fastdllm-rt chat: /reset clears the conversation, /quit leaves\n")
    while True:
        stdout.write("> ")
        stdout.flush()
        line = stdin.readline()
        if not line:
            stdout.write("\n")
            return 0
        text = line.strip()
        if not text:
            continue
        if text in ("/quit", "/exit"):
            return 0
        if text == "/reset":
            history = history[:1] if system else []
            stdout.write("(conversation cleared)\n")
            continue
        history.append({"role": "user", "content": text})
        t0 = time.monotonic()
        s = engine.stream(history, **gen)
        reply = []
        try:
            for delta in s:
                reply.append(delta)
                stdout.write(delta)
                stdout.flush()
        except KeyboardInterrupt:
            s.close()
            stdout.write("\n(interrupted)\n")
            history.pop()
            continue
        r = s.result
        dt = time.monotonic() - t0
        history.append({"role": "assistant", "content": "".join(reply)})
        stdout.write(f"\n[{len(r.token_ids)} tokens, {len(r.token_ids) / dt:.1f} tok/s, "
                     f"{r.tokens_per_forward:.2f} tokens/forward, {r.num_forwards} forwards]\n")
