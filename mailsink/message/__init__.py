"""
A stored message read back: its bytes to the facts, bodies and parts the views show
(L{mailsink.message.mime}), the shapes they are given in (L{mailsink.message.shapes}),
the trace headers mailsink wrote, and the search syntax over them.
"""
