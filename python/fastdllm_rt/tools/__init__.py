"""Tools users run from the CLI: the decode-order picture (trace), the
throughput bench, the chat REPL."""
