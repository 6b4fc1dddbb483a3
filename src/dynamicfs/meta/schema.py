"""The metadata schema: the single place that defines what the database holds.

Read this file to understand the filesystem. Every table is documented next to its columns.
SCHEMA_VERSION is stored in `settings` and checked at open (a newer one is refused).
"""

SCHEMA_VERSION = 1

ROOT_INODE = 1

SCHEMA = """
-- Pool-wide settings: format_version, pool_uuid, block_size, policy, created.
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Registered disks. `state` is one of healthy|degraded|suspect|draining|failed (only healthy is
-- written by this version; the health model builds on it). Error counters survive restarts so
-- the health of a disk is judged on its whole history, not one mount.
CREATE TABLE disks (
    id              INTEGER PRIMARY KEY,
    uuid            TEXT NOT NULL UNIQUE,
    path            TEXT NOT NULL UNIQUE,
    tier            TEXT NOT NULL CHECK (tier IN ('fast', 'slow')),
    capacity        INTEGER,            -- optional cap in bytes below the filesystem's size
    state           TEXT NOT NULL DEFAULT 'healthy',
    added           REAL NOT NULL,
    read_errors     INTEGER NOT NULL DEFAULT 0,
    write_errors    INTEGER NOT NULL DEFAULT 0,
    checksum_errors INTEGER NOT NULL DEFAULT 0
);

-- One row per inode. Times are integer nanoseconds since the epoch. `nlink` counts directory
-- entries (directories: 2 + subdirectories). An inode with nlink = 0 lives only while the
-- kernel still holds it open; rows left with nlink = 0 after a crash are purged at mount.
-- `policy` overrides the pool policy for new extents of this file or directory (NULL: inherit);
-- new inodes copy their parent directory's. `alloc` is the sum of the lengths of the extents the
-- block map points at (what st_blocks reports), kept current by every block-map change.
CREATE TABLE inodes (
    id       INTEGER PRIMARY KEY,
    mode     INTEGER NOT NULL,
    uid      INTEGER NOT NULL,
    gid      INTEGER NOT NULL,
    size     INTEGER NOT NULL DEFAULT 0,
    nlink    INTEGER NOT NULL,
    rdev     INTEGER NOT NULL DEFAULT 0,
    atime_ns INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    policy   TEXT,
    alloc    INTEGER NOT NULL DEFAULT 0
);
-- Mount-time recovery looks for inodes without links; this keeps that off a table scan.
CREATE INDEX inodes_unlinked ON inodes(id) WHERE nlink = 0;

-- Directory entries. The rowid `id` only grows, so it is a stable readdir offset: entries added
-- or removed during a listing never make another entry appear twice or vanish.
CREATE TABLE dentries (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    parent INTEGER NOT NULL REFERENCES inodes(id),
    name   BLOB NOT NULL,
    inode  INTEGER NOT NULL REFERENCES inodes(id),
    UNIQUE (parent, name)
);
CREATE INDEX dentries_inode ON dentries(inode);

CREATE TABLE symlinks (
    inode  INTEGER PRIMARY KEY REFERENCES inodes(id),
    target BLOB NOT NULL
);

CREATE TABLE xattrs (
    inode INTEGER NOT NULL REFERENCES inodes(id),
    name  BLOB NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (inode, name)
) WITHOUT ROWID;

-- Block map: logical block `idx` of `inode` is stored in `extent`. Absent rows are holes.
CREATE TABLE blocks (
    inode  INTEGER NOT NULL,
    idx    INTEGER NOT NULL,
    extent INTEGER NOT NULL REFERENCES extents(id),
    PRIMARY KEY (inode, idx)
) WITHOUT ROWID;

-- Immutable, content-addressed extents. `hash` is the BLAKE3 of the plaintext (the extent id on
-- disk); `refcount` is the number of block-map rows pointing here. The codec and its parameters
-- are recorded per extent so that policies and codecs can change without ambiguity.
CREATE TABLE extents (
    id       INTEGER PRIMARY KEY,
    hash     BLOB NOT NULL UNIQUE,
    length   INTEGER NOT NULL,
    codec_id INTEGER NOT NULL,
    k        INTEGER NOT NULL,
    m        INTEGER NOT NULL,
    refcount INTEGER NOT NULL
);
-- Unreferenced extents (a crash between a commit and the free that follows it).
CREATE INDEX extents_unreferenced ON extents(id) WHERE refcount <= 0;

-- Where each fragment (replica or shard `idx`) of an extent lives. `size` is the fragment
-- file's size on disk (header included). Queryable by disk for rebuild and drain.
CREATE TABLE fragments (
    extent INTEGER NOT NULL REFERENCES extents(id),
    idx    INTEGER NOT NULL,
    disk   INTEGER NOT NULL REFERENCES disks(id),
    size   INTEGER NOT NULL,
    PRIMARY KEY (extent, idx)
) WITHOUT ROWID;
CREATE INDEX fragments_disk ON fragments(disk);
"""
