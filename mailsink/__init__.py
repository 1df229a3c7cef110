"""mailsink: a multi-protocol mail sink daemon for development boxes."""
