#!/usr/bin/env bash
# The main job: a demo pool of four directory disks, mounted at /mnt/dynamicfs-demo.
# Safe to run again: it reuses the pool and disks it made before, and leaves an existing
# mount alone. DYNAMICFS_DEMO_DIR and DYNAMICFS_DEMO_MNT move the pool and the mountpoint.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
base=${DYNAMICFS_DEMO_DIR:-/var/tmp/dynamicfs-demo}
mnt=${DYNAMICFS_DEMO_MNT:-/mnt/dynamicfs-demo}
pool=$base/pool

if [ "$(id -u)" -ne 0 ]; then
  echo "demo.sh: error: run as root (it installs packages and mounts at $mnt)" >&2
  exit 1
fi

bash "$here/scripts/bootstrap.sh"
dfs=$here/.venv/bin/dynamicfs
py=$here/.venv/bin/python

json_field() {  # json_field FIELD < json  ->  the field's value ("" for null/false)
  "$py" -c 'import json, sys; v = json.load(sys.stdin).get(sys.argv[1]); print("" if v in (None, False) else v)' "$1"
}

is_mounted() {  # nothing but the mount table: stat() on a dead mount fails
  awk -v m="$mnt" '$5 == m && / - fuse\.dynamicfs / {found = 1} END {exit !found}' \
    /proc/self/mountinfo
}
live() { [ -e "$pool/pool.json" ] && [ -n "$("$dfs" status "$pool" --json 2>/dev/null | json_field mounted)" ]; }
# A mount left behind by a daemon that died (stat fails: ENOTCONN) would block everything
# below; clear it first. A live mount of another pool is left for `mount` to refuse.
if is_mounted && ! live && ! stat "$mnt" >/dev/null 2>&1; then
  "$dfs" umount "$mnt" >/dev/null 2>&1 || fusermount3 -u -z "$mnt"
fi

mkdir -p "$base" "$mnt"
if [ ! -e "$pool/pool.json" ]; then
  "$dfs" init "$pool" >/dev/null
  echo "created pool $pool"
fi

registered=$("$dfs" list-disks "$pool" --json |
  "$py" -c 'import json, sys; print("\n".join(d["path"] for d in json.load(sys.stdin)["disks"]))')
for i in 1 2 3 4; do
  disk=$base/disk$i
  if ! grep -qxF "$disk" <<<"$registered"; then
    mkdir -p "$disk"
    "$dfs" add-disk "$pool" "$disk" >/dev/null
    echo "added disk $disk"
  fi
done

status=$("$dfs" status "$pool" --json 2>/dev/null)
where=$(json_field mountpoint <<<"$status")
if [ -n "$(json_field mounted <<<"$status")" ] && [ -n "$where" ]; then
  echo "already mounted"
else
  "$dfs" mount "$pool" "$mnt" >/dev/null
  where=$mnt
fi

policy=$(json_field policy <<<"$status")
cat <<EOF2

DynamicFS demo pool is mounted at $where
  pool:     $pool ($policy over 4 directory disks in $base/disk1..4)
  status:   dynamicfs status $pool
  unmount:  dynamicfs umount $where
EOF2
