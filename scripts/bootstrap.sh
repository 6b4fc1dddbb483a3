#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian machine (as root): system packages, a venv, the project.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
need=()
for p in fuse3 libfuse3-dev pkg-config attr; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
venv="$here/.venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
stamp="$venv/.installed-$(sha1sum "$here/pyproject.toml" | cut -c1-12)"
# The editable install names the source tree it serves; a venv shared with another checkout
# (a git worktree, say) may point elsewhere, and would then run that checkout's code.
# A glob, not `ls | head`: on a new venv there is no such file, and under pipefail a failing
# `ls` would end the script.
pth=""
for f in "$venv"/lib/python3*/site-packages/__editable__.dynamicfs-*.pth; do
  if [ -e "$f" ]; then pth=$f; break; fi
done
if [ ! -e "$stamp" ] || [ -z "$pth" ] || [ "$(cat "$pth")" != "$here/src" ]; then
  "$venv/bin/pip" install -q --upgrade pip >/dev/null
  "$venv/bin/pip" install -q -e "$here[test]"
  touch "$stamp"
fi
# Put `dynamicfs` on root's PATH; a real file already there (another install) is left alone.
link=/usr/local/bin/dynamicfs
if [ "$(id -u)" -eq 0 ] && { [ -L "$link" ] || [ ! -e "$link" ]; }; then
  ln -sfn "$venv/bin/dynamicfs" "$link"
fi
