"""The FUSE adapter: pyfuse3 requests in, engine calls out. Nothing else knows FUSE exists."""

from .mount import build_options, is_mounted, request_stop, serve_fuse
from .operations import Operations

__all__ = ["Operations", "build_options", "is_mounted", "request_stop", "serve_fuse"]
