"""Error numbers, as the kernel returns them (negated: ``return -ENOMEM``).

Values from include/uapi/asm-generic/errno-base.h (1-34), asm-generic/errno.h
(ENOSYS, ENOTCONN, ETIMEDOUT; the values x86 uses) and include/linux/errno.h
(EPROBE_DEFER, ENOTSUPP: kernel-internal, never seen by user space).
"""

from __future__ import annotations

EPERM = 1
ENOENT = 2
EINTR = 4
EIO = 5
ENXIO = 6
ENOMEM = 12
EACCES = 13
EFAULT = 14
EBUSY = 16
EEXIST = 17
ENODEV = 19
EINVAL = 22
ENOTTY = 25
ENOSPC = 28
ERANGE = 34
ENOSYS = 38
ENOTCONN = 107
ETIMEDOUT = 110
EPROBE_DEFER = 517
ENOTSUPP = 524
