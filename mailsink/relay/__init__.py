"""
Relaying captured messages to a real SMTP server (C{[relay]}): the client and its pool
(L{mailsink.relay.pool}), which recipients may be relayed to and what a released copy
looks like (L{mailsink.relay.policy}).
"""
