"""
SMTP sessions: every conversation kept and shown, failures first, each with what to change.

L{record} collects one session as the SMTP protocol sees it, L{diagnosis} says in one
sentence what went wrong, L{store} keeps the newest C{[mailsink] max_sessions} in SQLite.
"""
