"""The optional compiled fast paths (backend/_speedups.c), or None where they were not built.

The C extension is built on install where a compiler is at hand, and an
install without one still works: every caller keeps its pure-Python way and
takes the compiled one only when `native` is set. Both give the same bytes;
the tests run both and compare. Read `native` at call time, not at import, so
that a test can switch it off.
"""

from __future__ import annotations

__all__ = ["native"]

try:
    from backend import _speedups as native  # typed by _speedups.pyi
except ImportError:  # built without a C compiler
    native = None  # type: ignore[assignment]
