"""
The store: the Maildir written durably, who may deliver into which of its mailboxes, and
the store as the command line reads it.
"""
