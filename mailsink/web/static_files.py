"""
The web view's static files: twisted.web's L{File}, with one type for JavaScript everywhere.

L{File} takes types from the host's C{mime.types}, and Python's own fallback for C{.js} has
changed between versions. The page's scripts are ES modules and every response says
C{nosniff}, so a browser runs them only when served as JavaScript: pin C{text/javascript}
(RFC 9239) rather than trust the host.
"""

from __future__ import annotations

from twisted.web.static import File


class StaticFiles(File):
    """L{File} whose C{.js} files (in every subfolder) are C{text/javascript; charset=utf-8}."""

    contentTypes = {**File.contentTypes, ".js": "text/javascript; charset=utf-8"}
