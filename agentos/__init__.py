"""agentos: a local-first operating environment for LLM agents."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("agentos")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
