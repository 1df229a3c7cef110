"""twistd plugin: `twistd -n mailsink -c mailsink.ini`."""

from twisted.application.service import ServiceMaker

mailsink = ServiceMaker(
    "mailsink",
    "mailsink.tap",
    "A mail sink: SMTP in every TLS mode, stored durably in a Maildir.",
    "mailsink",
)
