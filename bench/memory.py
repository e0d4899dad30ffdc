"""Peak memory of this process (Linux ``/proc/self/status``, else ``ru_maxrss``).

One reading per field, in kB as the kernel reports it; :func:`peak_memory` in bytes.
"""

from __future__ import annotations

import contextlib
import resource


def status_kb(field_name: str) -> int | None:
    """``/proc/self/status`` field ``field_name`` (``VmHWM``, ``VmRSS``, ...) in kB, or None
    where the file or the field does not exist."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) on Linux; False where that is not possible.

    Freed heap is first returned to the OS (glibc ``malloc_trim``) so that memory a
    previous measurement freed is not silently reused under the new baseline."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


def reset_peak_memory() -> str:
    """Reset the process's peak RSS; returns the method :func:`peak_memory` must use."""
    if reset_peak_rss() and status_kb("VmHWM") is not None:
        return "VmHWM (reset per arm)"
    return "ru_maxrss (cumulative over the run)"


def peak_memory(method: str) -> int:
    """Peak RSS in bytes since :func:`reset_peak_memory` returned ``method``."""
    if method.startswith("VmHWM"):
        kb = status_kb("VmHWM")
        if kb is not None:
            return kb * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
