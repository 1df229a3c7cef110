"""The SMTP sink a Twisted user writes first: the baseline bench/smtp_ingest compares with.

twisted.mail.smtp.ESMTP with a delivery that writes each message to Maildir/tmp/ and
renames it into Maildir/new/ -- no fsync, no trace headers, no limits.
Usage: naive_twisted_sink.py PORT MAILDIR (listens on 127.0.0.1:PORT).
"""

import itertools
import os
import socket
import sys
import time

from twisted.internet import defer, reactor
from twisted.logger import globalLogBeginner, textFileLogObserver
from twisted.mail import smtp
from zope.interface import implementer

_serial = itertools.count()


@implementer(smtp.IMessage)
class MaildirMessage:
    """One message, written line by line to tmp/ and renamed into new/ at the end."""

    def __init__(self, maildir: str) -> None:
        name = f"{time.time_ns()}.{os.getpid()}_{next(_serial)}.{socket.gethostname()}"
        self.tmp, self.new = (os.path.join(maildir, d, name) for d in ("tmp", "new"))
        self.file = open(self.tmp, "wb")  # noqa: SIM115 -- closed when DATA ends or fails

    def lineReceived(self, line: bytes) -> None:
        self.file.write(line + b"\n")

    def eomReceived(self) -> defer.Deferred[None]:
        self.file.close()
        os.rename(self.tmp, self.new)
        return defer.succeed(None)

    def connectionLost(self) -> None:
        self.file.close()
        os.remove(self.tmp)


@implementer(smtp.IMessageDelivery)
class MaildirDelivery:
    """Accepts every sender and recipient; each recipient gets its own file."""

    def __init__(self, maildir: str) -> None:
        self.maildir = maildir

    def receivedHeader(self, helo: object, origin: object, recipients: object) -> None:
        return None  # no Received: header

    def validateFrom(self, helo: object, origin: smtp.Address) -> smtp.Address:
        return origin

    def validateTo(self, user: smtp.User) -> object:
        return lambda: MaildirMessage(self.maildir)


class SinkFactory(smtp.SMTPFactory):
    """ESMTP connections sharing one delivery."""

    protocol = smtp.ESMTP

    def __init__(self, maildir: str) -> None:
        super().__init__()
        self.delivery = MaildirDelivery(maildir)

    def buildProtocol(self, addr: object) -> smtp.ESMTP:
        p = super().buildProtocol(addr)
        p.delivery = self.delivery
        return p


if __name__ == "__main__":
    port, maildir = int(sys.argv[1]), sys.argv[2]
    for d in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(maildir, d), exist_ok=True)
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    reactor.listenTCP(port, SinkFactory(maildir), interface="127.0.0.1")
    reactor.run()
