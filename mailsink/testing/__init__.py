"""
mailsink for test suites: a client of a sink's API (standard library only) and, in
L{mailsink.testing.plugin}, the pytest fixtures C{mailsink_server} and C{mailsink}.
"""

from mailsink.testing.client import MailsinkClient, MailsinkError, WaitTimeout
from mailsink.testing.models import Address, Attachment, Message, Summary
from mailsink.testing.sink import Sink

__all__ = ["Address", "Attachment", "MailsinkClient", "MailsinkError", "Message", "Sink",
           "Summary", "WaitTimeout"]
