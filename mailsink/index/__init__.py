"""
The message index: summaries of every Maildir message in SQLite, kept current and
searchable, for the web view and the API (L{mailsink.index.message_index.MessageIndex}).
"""
