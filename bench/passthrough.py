"""A minimal pyfuse3 + trio passthrough filesystem, kept only as the benchmark baseline.

It mirrors a directory (SOURCE) at MOUNTPOINT and does nothing else: no hashing, no coding, no
metadata database. It uses the kernel cache settings DynamicFS uses (entry/attr timeouts of 60 s,
cached negative lookups, the writeback cache, keep_cache on open and create) and forwards
fsync/fdatasync and extended attributes, so the ratio
DynamicFS / passthrough isolates DynamicFS's own work.

Extended attributes are forwarded because a filesystem that has them pays a FUSE round trip
per write(2): the kernel asks GETXATTR security.capability before every write (to drop file
capabilities), unless the filesystem once answered ENOSYS to GETXATTR (then never again), or
negotiated FUSE_HANDLE_KILLPRIV_V2, which pyfuse3 cannot. A passthrough without xattrs would
measure a floor that no xattr-capable FUSE filesystem in Python can reach.

It is inode-based: the FUSE inode is the source file's st_ino (the root is pyfuse3.ROOT_INODE),
mapped to the path it was looked up at.
Syscalls run on the trio thread, like pyfuse3's own example: this is the floor cost of FUSE in
Python, not a model filesystem.

    python bench/passthrough.py SOURCE MOUNTPOINT      # stays in the foreground; umount to stop
"""

from __future__ import annotations

import argparse
import errno
import os
import stat as stat_mod
import sys
from collections import defaultdict

import pyfuse3
import trio

TIMEOUT = 60.0  # same as dynamicfs.fuse.operations.ENTRY_TIMEOUT / ATTR_TIMEOUT


def _err(exc: OSError) -> pyfuse3.FUSEError:
    return pyfuse3.FUSEError(exc.errno or errno.EIO)


class Passthrough(pyfuse3.Operations):
    enable_writeback_cache = True

    def __init__(self, source: str) -> None:
        super().__init__()
        self.paths: dict[int, set[str]] = {pyfuse3.ROOT_INODE: {source}}
        self.lookups: dict[int, int] = defaultdict(int)
        self.fd_inode: dict[int, int] = {}
        self.inode_fd: dict[int, int] = {}
        self.fd_open: dict[int, int] = defaultdict(int)
        self.root_ino = os.lstat(source).st_ino
        self.dirs: dict[int, tuple[int, list[str] | None]] = {}
        self._next_dh = 0

    # -- inode <-> path ------------------------------------------------------------------------

    def _path(self, inode: int) -> str:
        try:
            return next(iter(self.paths[inode]))
        except (KeyError, StopIteration):
            raise pyfuse3.FUSEError(errno.ENOENT) from None

    def _ino(self, st_ino: int) -> int:
        return pyfuse3.ROOT_INODE if st_ino == self.root_ino else st_ino

    def _remember(self, path: str, st: os.stat_result) -> int:
        ino = self._ino(st.st_ino)
        self.paths.setdefault(ino, set()).add(path)
        return ino

    def _forget_path(self, inode: int, path: str) -> None:
        s = self.paths.get(inode)
        if s is not None:
            s.discard(path)

    def _entry(self, st: os.stat_result, ino: int) -> pyfuse3.EntryAttributes:
        e = pyfuse3.EntryAttributes()
        e.st_ino = ino
        e.generation = 0
        e.entry_timeout = TIMEOUT
        e.attr_timeout = TIMEOUT
        e.st_mode = st.st_mode
        e.st_nlink = st.st_nlink
        e.st_uid = st.st_uid
        e.st_gid = st.st_gid
        e.st_rdev = st.st_rdev
        e.st_size = st.st_size
        e.st_blksize = st.st_blksize
        e.st_blocks = st.st_blocks
        e.st_atime_ns = st.st_atime_ns
        e.st_mtime_ns = st.st_mtime_ns
        e.st_ctime_ns = st.st_ctime_ns
        return e

    def _stat(self, path: str, fd: int | None = None) -> os.stat_result:
        try:
            return os.fstat(fd) if fd is not None else os.lstat(path)
        except OSError as exc:
            raise _err(exc) from None

    # -- lookups -------------------------------------------------------------------------------

    async def lookup(self, parent_inode, name, ctx=None):
        path = os.path.join(self._path(parent_inode), os.fsdecode(name))
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            # Like DynamicFS: st_ino 0 lets the kernel cache the miss for the entry timeout.
            miss = pyfuse3.EntryAttributes()
            miss.st_ino = 0
            miss.entry_timeout = TIMEOUT
            return miss
        except OSError as exc:
            raise _err(exc) from None
        ino = self._remember(path, st)
        self.lookups[ino] += 1
        return self._entry(st, ino)

    async def forget(self, inode_list):
        for ino, n in inode_list:
            left = self.lookups[ino] - n
            if left <= 0 and ino != pyfuse3.ROOT_INODE:
                self.lookups.pop(ino, None)
                if ino not in self.inode_fd:
                    self.paths.pop(ino, None)
            else:
                self.lookups[ino] = left

    async def getattr(self, inode, ctx=None):
        fd = self.inode_fd.get(inode)
        st = self._stat(self._path(inode) if fd is None else "", fd)
        return self._entry(st, inode)

    async def setattr(self, inode, attr, fields, fh, ctx):
        path = self._path(inode)
        fd = fh if fh is not None else None
        try:
            if fields.update_size:
                if fd is not None:
                    os.ftruncate(fd, attr.st_size)
                else:
                    os.truncate(path, attr.st_size)
            if fields.update_mode:
                os.chmod(path, stat_mod.S_IMODE(attr.st_mode), follow_symlinks=False) \
                    if not stat_mod.S_ISLNK(os.lstat(path).st_mode) else None
            if fields.update_uid or fields.update_gid:
                os.chown(path, attr.st_uid if fields.update_uid else -1,
                         attr.st_gid if fields.update_gid else -1, follow_symlinks=False)
            if fields.update_atime or fields.update_mtime:
                st = os.lstat(path)
                a = attr.st_atime_ns if fields.update_atime else st.st_atime_ns
                m = attr.st_mtime_ns if fields.update_mtime else st.st_mtime_ns
                os.utime(path, ns=(a, m), follow_symlinks=False)
        except OSError as exc:
            raise _err(exc) from None
        return await self.getattr(inode)

    async def readlink(self, inode, ctx):
        try:
            return os.fsencode(os.readlink(self._path(inode)))
        except OSError as exc:
            raise _err(exc) from None

    async def statfs(self, ctx):
        try:
            sv = os.statvfs(self._path(pyfuse3.ROOT_INODE))
        except OSError as exc:
            raise _err(exc) from None
        out = pyfuse3.StatvfsData()
        for a in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files",
                  "f_ffree", "f_favail", "f_namemax"):
            setattr(out, a, getattr(sv, a))
        return out

    # -- namespace -----------------------------------------------------------------------------

    def _created(self, path: str) -> pyfuse3.EntryAttributes:
        st = self._stat(path)
        ino = self._remember(path, st)
        self.lookups[ino] += 1
        return self._entry(st, ino)

    async def mknod(self, parent_inode, name, mode, rdev, ctx):
        path = os.path.join(self._path(parent_inode), os.fsdecode(name))
        try:
            os.mknod(path, mode=mode & ~ctx.umask, device=rdev)
            os.chown(path, ctx.uid, ctx.gid)
        except OSError as exc:
            raise _err(exc) from None
        return self._created(path)

    async def mkdir(self, parent_inode, name, mode, ctx):
        path = os.path.join(self._path(parent_inode), os.fsdecode(name))
        try:
            os.mkdir(path, mode & ~ctx.umask)
            os.chown(path, ctx.uid, ctx.gid)
        except OSError as exc:
            raise _err(exc) from None
        return self._created(path)

    async def symlink(self, parent_inode, name, target, ctx):
        path = os.path.join(self._path(parent_inode), os.fsdecode(name))
        try:
            os.symlink(os.fsdecode(target), path)
            os.chown(path, ctx.uid, ctx.gid, follow_symlinks=False)
        except OSError as exc:
            raise _err(exc) from None
        return self._created(path)

    async def link(self, inode, new_parent_inode, new_name, ctx):
        path = os.path.join(self._path(new_parent_inode), os.fsdecode(new_name))
        try:
            os.link(self._path(inode), path, follow_symlinks=False)
        except OSError as exc:
            raise _err(exc) from None
        return self._created(path)

    async def unlink(self, parent_inode, name, ctx):
        path = os.path.join(self._path(parent_inode), os.fsdecode(name))
        try:
            st = os.lstat(path)
            os.unlink(path)
        except OSError as exc:
            raise _err(exc) from None
        self._forget_path(self._ino(st.st_ino), path)

    async def rmdir(self, parent_inode, name, ctx):
        path = os.path.join(self._path(parent_inode), os.fsdecode(name))
        try:
            st = os.lstat(path)
            os.rmdir(path)
        except OSError as exc:
            raise _err(exc) from None
        self._forget_path(self._ino(st.st_ino), path)

    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        if flags:
            raise pyfuse3.FUSEError(errno.EINVAL)
        old = os.path.join(self._path(parent_inode_old), os.fsdecode(name_old))
        new = os.path.join(self._path(parent_inode_new), os.fsdecode(name_new))
        try:
            st = os.lstat(old)
            try:
                st_new = os.lstat(new)
            except FileNotFoundError:
                st_new = None
            os.rename(old, new)
        except OSError as exc:
            raise _err(exc) from None
        if st_new is not None:
            self._forget_path(self._ino(st_new.st_ino), new)
        ino = self._ino(st.st_ino)
        self._forget_path(ino, old)
        self.paths.setdefault(ino, set()).add(new)
        if stat_mod.S_ISDIR(st.st_mode):
            # Children remembered under the old directory path move with it.
            prefix = old + os.sep
            for s in self.paths.values():
                for p in [p for p in s if p.startswith(prefix)]:
                    s.discard(p)
                    s.add(new + p[len(old):])

    # -- files ---------------------------------------------------------------------------------

    def _opened(self, inode: int, fd: int) -> int:
        self.fd_inode[fd] = inode
        self.inode_fd[inode] = fd
        self.fd_open[fd] += 1
        return fd

    async def open(self, inode, flags, ctx):
        if inode in self.inode_fd:
            fd = self.inode_fd[inode]
            self.fd_open[fd] += 1
            return pyfuse3.FileInfo(fh=fd, keep_cache=True)
        # With the writeback cache the kernel may read from a write-only file.
        flags &= ~os.O_APPEND
        if flags & os.O_ACCMODE == os.O_WRONLY:
            flags = (flags & ~os.O_ACCMODE) | os.O_RDWR
        try:
            fd = os.open(self._path(inode), flags & ~os.O_CREAT)
        except OSError as exc:
            raise _err(exc) from None
        return pyfuse3.FileInfo(fh=self._opened(inode, fd), keep_cache=True)

    async def create(self, parent_inode, name, mode, flags, ctx):
        path = os.path.join(self._path(parent_inode), os.fsdecode(name))
        flags &= ~os.O_APPEND
        if flags & os.O_ACCMODE == os.O_WRONLY:
            flags = (flags & ~os.O_ACCMODE) | os.O_RDWR
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_TRUNC, mode & ~ctx.umask)
            os.fchown(fd, ctx.uid, ctx.gid)
        except OSError as exc:
            raise _err(exc) from None
        entry = self._created(path)
        return pyfuse3.FileInfo(fh=self._opened(entry.st_ino, fd), keep_cache=True), entry

    async def read(self, fh, off, size):
        try:
            return os.pread(fh, size, off)
        except OSError as exc:
            raise _err(exc) from None

    async def write(self, fh, off, buf):
        try:
            return os.pwrite(fh, buf, off)
        except OSError as exc:
            raise _err(exc) from None

    async def flush(self, fh):
        pass

    async def fsync(self, fh, datasync):
        try:
            (os.fdatasync if datasync else os.fsync)(fh)
        except OSError as exc:
            raise _err(exc) from None

    async def release(self, fh):
        self.fd_open[fh] -= 1
        if self.fd_open[fh] > 0:
            return
        del self.fd_open[fh]
        inode = self.fd_inode.pop(fh)
        del self.inode_fd[inode]
        if self.lookups.get(inode, 0) <= 0 and inode != pyfuse3.ROOT_INODE:
            self.paths.pop(inode, None)
        try:
            os.close(fh)
        except OSError as exc:
            raise _err(exc) from None

    # -- directories ---------------------------------------------------------------------------

    async def opendir(self, inode, ctx):
        self._next_dh += 1
        self.dirs[self._next_dh] = (inode, None)
        return self._next_dh

    async def readdir(self, fh, start_id, token):
        inode, entries = self.dirs[fh]
        path = self._path(inode)
        if entries is None or start_id == 0:
            # One listing per opendir (rewinddir re-reads it); offsets are list positions.
            try:
                with os.scandir(path) as it:
                    entries = [e.name for e in it]
            except OSError as exc:
                raise _err(exc) from None
            self.dirs[fh] = (inode, entries)
        for i in range(start_id, len(entries)):
            name = entries[i]
            p = os.path.join(path, name)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            fino = self._remember(p, st)
            if not pyfuse3.readdir_reply(token, os.fsencode(name), self._entry(st, fino), i + 1):
                break
            self.lookups[fino] += 1

    async def releasedir(self, fh):
        self.dirs.pop(fh, None)

    async def fsyncdir(self, fh, datasync):
        try:
            fd = os.open(self._path(self.dirs[fh][0]), os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise _err(exc) from None

    # -- extended attributes (see the module docstring for why they are here) ------------------

    def _xattr(self, fn, inode, *args):
        try:
            return fn(self._path(inode), *args, follow_symlinks=False)
        except OSError as exc:
            raise _err(exc) from None

    async def getxattr(self, inode, name, ctx):
        return self._xattr(os.getxattr, inode, name)

    async def setxattr(self, inode, name, value, ctx):
        self._xattr(os.setxattr, inode, name, value)

    async def listxattr(self, inode, ctx):
        return [n.encode() for n in self._xattr(os.listxattr, inode)]

    async def removexattr(self, inode, name, ctx):
        self._xattr(os.removexattr, inode, name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source")
    ap.add_argument("mountpoint")
    args = ap.parse_args()
    source = os.path.abspath(args.source)
    ops = Passthrough(source)
    options = set(pyfuse3.default_options)
    options |= {"fsname=bench-passthrough", "default_permissions", "nosuid", "nodev"}
    pyfuse3.init(ops, args.mountpoint, options)
    try:
        trio.run(pyfuse3.main)
    except BaseException:
        pyfuse3.close(unmount=True)
        raise
    pyfuse3.close(unmount=False)


if __name__ == "__main__":
    sys.exit(main())
