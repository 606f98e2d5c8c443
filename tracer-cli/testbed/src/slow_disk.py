"""A one-file FUSE filesystem whose reads each take DELAY_MS, one at a time, like a disk
that seeks for every request. kstall's tests put a loop device (and ext4) on its file, so
page-cache misses in the broker wait for real I/O. Writes are not delayed.

usage: slow_disk.py BACKING_FILE MOUNTPOINT DELAY_MS
"""
import errno
import os
import stat
import sys
import threading
import time

from fusepy import FUSE, FuseOSError, Operations

NAME = "/disk.img"


class SlowDisk(Operations):
    def __init__(self, backing, delay_s):
        self.fd = os.open(backing, os.O_RDWR)
        self.delay_s = delay_s
        self.one_at_a_time = threading.Lock()

    def getattr(self, path, fh=None):
        now = time.time()
        if path == "/":
            return dict(st_mode=stat.S_IFDIR | 0o755, st_nlink=2, st_atime=now, st_mtime=now, st_ctime=now)
        if path != NAME:
            raise FuseOSError(errno.ENOENT)
        size = os.fstat(self.fd).st_size
        return dict(st_mode=stat.S_IFREG | 0o600, st_nlink=1, st_size=size, st_atime=now, st_mtime=now, st_ctime=now)

    def readdir(self, path, fh):
        return [".", "..", NAME[1:]]

    def open(self, path, fi):
        if path != NAME:
            raise FuseOSError(errno.ENOENT)
        # No FUSE page cache: every read of the loop device reaches this process.
        fi.direct_io = 1
        return 0

    def read(self, path, size, offset, fi):
        with self.one_at_a_time:
            time.sleep(self.delay_s)
            return os.pread(self.fd, size, offset)

    def write(self, path, data, offset, fi):
        return os.pwrite(self.fd, data, offset)

    def truncate(self, path, length, fh=None):
        os.ftruncate(self.fd, length)

    def flush(self, path, fi):
        return 0

    def fsync(self, path, datasync, fi):
        os.fsync(self.fd)
        return 0


if __name__ == "__main__":
    backing, mountpoint, delay_ms = sys.argv[1], sys.argv[2], float(sys.argv[3])
    FUSE(SlowDisk(backing, delay_ms / 1000.0), mountpoint, foreground=True, nothreads=True, raw_fi=True)
