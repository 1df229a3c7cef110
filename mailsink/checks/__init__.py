"""
Message checks: what mail servers and clients will make of a stored message.

Each check is its own module family and is run only when asked (a route or the command
line), never during intake. C{lint} (mailsink's own rules over the bytes and the envelope)
lives here now; the HTML compatibility, link and spam checks will sit beside it.
"""
