"""
Message checks: what mail servers and clients will make of a stored message.

Each check is its own module family and is run only when asked (a route or the command
line), never during intake: C{lint} (mailsink's own rules over the bytes and the envelope),
C{html_check} (client support after caniemail.com, Mailpit's shape), C{link_check} and
C{spamc} (SpamAssassin).
"""
