"""Reading the JSON files of a model folder, with errors naming the file."""
from __future__ import annotations

import json


def read_json_object(path: str, error: type = ValueError) -> dict:
    """The JSON object in `path`; invalid JSON, text that is not UTF-8 or a
    value that is not an object raises `error` naming the file."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data
