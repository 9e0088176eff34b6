"""Exceptions raised by fastdllm_rt's Python layer."""


class LoadError(ValueError):
    """A model folder cannot be loaded; the message names the file and the key or tensor."""
