"""Exit statuses of kanode's command lines (``kanode.fit``, ``kanode.sweep``,
``kanode.compare``, ``kanode.symbolic``), defined once.

``systems``' command line uses the same numbers but cannot import this module:
``systems`` never imports kanode (or torch).
"""

from __future__ import annotations

__all__ = ["EXIT_OK", "EXIT_FAILED", "EXIT_BAD_INPUT", "EXIT_DIVERGED", "EXIT_REJECTED",
           "EXIT_INTERRUPTED"]

EXIT_OK = 0            # finished (a sweep: every run finished or diverged)
EXIT_FAILED = 1        # something broke that is not the input's fault (a sweep: a run failed)
EXIT_BAD_INPUT = 2     # bad options or files: one line "kanode: error: ..." on stderr
EXIT_DIVERGED = 3      # training diverged; the last good checkpoint is kept
EXIT_REJECTED = 4      # kanode.symbolic: the formula does not reproduce the data (kanode.symbolic.verdict);
                       # its files are written, summary.json says status "rejected" and why
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
