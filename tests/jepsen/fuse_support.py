"""Why lazyfs (the power nemesis's FUSE disks) cannot run here, or None.

.ci/run installs libfuse2 and fusermount where apt can; a machine without
/dev/fuse or root (an unprivileged container) cannot mount at all.
"""

from __future__ import annotations

import os
import shutil


def _why_not() -> str | None:
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    if os.geteuid() != 0:
        return "mounting needs root"
    if not (shutil.which("fusermount") or shutil.which("fusermount3")):
        return "no fusermount (apt install fuse3)"
    try:
        import fuse  # noqa: F401  (fusepy loads libfuse.so.2 on import)
    except (ImportError, OSError) as exc:
        return f"fusepy cannot load libfuse2 ({exc}; apt install libfuse2)"
    return None


FUSE_MISSING = _why_not()
