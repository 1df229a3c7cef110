"""IMAP4rev1 over the Maildir: C{twisted.mail.imap4} with a Maildir mailbox."""
