"""mailsink: a multi-protocol mail sink daemon for development boxes."""

__version__ = "0.1.0"
