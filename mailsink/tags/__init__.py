"""
Tags as Mailpit has them, kept in the Maildir as Dovecot keeps keywords.

L{names} says what a tag may be called and reads C{X-Tags}; L{keywords} maps names to
the keyword letters C{a}-C{z} of Maildir file names through the folder's
C{dovecot-keywords} file. The C{[tags]} rules that tag arriving messages are the index's
(L{mailsink.index.tag_rules}): they test a message against its search columns.
"""
