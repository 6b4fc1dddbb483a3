"""The control socket: how the CLI talks to a mounted pool's daemon (JSON lines over AF_UNIX)."""
