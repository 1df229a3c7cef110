"""
C{mailsink-sendmail}: a sendmail-compatible command that hands a message to mailsink
(L{mailsink.sendmail.main}).
"""
