"""The server's log when it runs as the per-user daemon: a file, size-capped and rotated.

The daemon runs for days; a hostile or broken client must not be able to fill the disk through it
(issue 14 item 4: 155 MB of tracebacks in 27 s). The transport already logs at most one line per kind
per interval (:meth:`PusherServer._note`); this caps what remains: ``server.log`` up to ``max_bytes``,
then ``server.log.1`` ... ``server.log.<backups>``, the oldest dropped.
"""

from __future__ import annotations

import io
import logging
import logging.handlers
import os
from pathlib import Path

__all__ = ["LOG_BACKUPS", "LOG_MAX_BYTES", "log_to_file"]

LOG_MAX_BYTES = 1024 * 1024  # bytes per file before it is rotated
LOG_BACKUPS = 2  # rotated files kept: at most (1 + LOG_BACKUPS) * LOG_MAX_BYTES on disk


class _PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """Every file it opens (the first and each after a rotation) is created mode 0600."""

    def _open(self) -> io.TextIOWrapper:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return open(fd, "a", encoding=self.encoding, errors=self.errors)


def log_to_file(
    path: str | Path,
    *,
    level: int = logging.WARNING,
    max_bytes: int = LOG_MAX_BYTES,
    backups: int = LOG_BACKUPS,
) -> logging.Handler:
    """Send the root logger to ``path``, rotated at ``max_bytes`` (bytes) keeping ``backups`` old files;
    created readable by this user only."""
    handler = _PrivateRotatingFileHandler(Path(path), maxBytes=max_bytes, backupCount=backups)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    return handler
