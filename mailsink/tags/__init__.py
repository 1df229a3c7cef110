"""
Tags as Mailpit has them, kept in the Maildir as Dovecot keeps keywords.

L{names} says what a tag may be called and reads C{X-Tags}; L{keywords} maps names to
the keyword letters C{a}-C{z} of Maildir file names through the folder's
C{dovecot-keywords} file; L{rules} tags arriving messages that match C{[tags]} queries.
"""
