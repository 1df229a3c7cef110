"""
Talking to the C{[relay]} server: connect in the configured TLS mode, verify its
certificate (or not, with C{tls_verify = false}), log in with the mechanism chosen from
what the server offers (CRAM-MD5, PLAIN, LOGIN), send one message on a connection.

Calls here block (each step bounded by C{[relay] timeout}); L{mailsink.relay.pool} runs
them in its own worker threads, off the reactor. Failures are L{Diagnosis} exceptions
worded by L{mailsink.probe}, adjusted to name the C{[relay]} keys to change.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Sequence

from mailsink import probe
from mailsink.config import RelaySettings
from mailsink.probe import Diagnosis

_FOR_RELAY = (
    ("pass --cafile with the server's certificate or CA, or --insecure to skip the check",
     "add the server's CA to the system's trusted certificates, or set [relay] tls_verify = "
     "false for a self-signed development server"),
    ("(or pass --insecure to skip the check)", "(or set [relay] tls_verify = false)"),
    ("pass --user and a password", "set [relay] username and password"),
    ("check username/password", "check [relay] username and password"),
    ("set tls = ", "set [relay] tls = "),
    ("check the host and port", "check [relay] host and port"),
    ("check the host name", "check [relay] host"),
)


def for_relay(sentence: str) -> str:
    """A L{mailsink.probe} sentence, naming the C{[relay]} keys instead of flags."""
    for old, new in _FOR_RELAY:
        sentence = sentence.replace(old, new)
    if sentence.startswith("certificate is for ") and "[relay]" not in sentence:
        sentence += ": set [relay] host to a name the certificate holds"
    return sentence


class RelayClient:
    """Opens ready-to-send connections to the configured relay server."""

    def __init__(self, settings: RelaySettings) -> None:
        self.settings = settings
        self.context = probe.make_context(insecure=not settings.tls_verify)

    @property
    def where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    def diagnose(self, error: BaseException, client: probe.Client) -> Diagnosis:
        """C{error} as one sentence that names what to change in C{[relay]}."""
        diagnosis = probe.diagnose(error, client, self.settings.host, self.settings.port)
        return Diagnosis(for_relay(str(diagnosis)))

    def connect(self) -> probe.Client:
        """A connection past EHLO, STARTTLS and AUTH as configured; or a L{Diagnosis}."""
        settings = self.settings
        client = probe.Client(mode=settings.tls, context=self.context,
                              timeout=float(settings.timeout))
        try:
            client.open(settings.host, settings.port)
            client.ehlo()
            if settings.tls == "starttls":
                if not client.has_extn("starttls"):
                    raise Diagnosis(f"{self.where} does not offer STARTTLS: set [relay] tls = "
                                    f"none, or use the server's TLS port")
                client.upgrade()
            if settings.username:
                self._login(client)
        except (OSError, smtplib.SMTPException, ssl.SSLError, Diagnosis) as error:
            client.close()
            raise self.diagnose(error, client) from None
        return client

    def _login(self, client: probe.Client) -> None:
        if not client.has_extn("auth"):
            if not client.tls and client.has_extn("starttls"):
                raise Diagnosis(f"{self.where} offers AUTH only after STARTTLS: set [relay] "
                                f"tls = starttls")
            raise Diagnosis(f"{self.where} does not offer AUTH: leave [relay] username empty"
                            + ("" if client.tls else ", or try tls = starttls or implicit"))
        mechanisms, _ = client.features()
        if not set(mechanisms) & {"PLAIN", "LOGIN", "CRAM-MD5"}:
            raise Diagnosis(f"{self.where} offers AUTH {' '.join(mechanisms)}, none of which "
                            f"mailsink speaks (PLAIN, LOGIN, CRAM-MD5)")
        client.login(self.settings.username, self.settings.password)

    def check(self) -> None:
        """Connect, greet, upgrade and log in as configured, then quit: no message."""
        client = self.connect()
        try:
            code, reply = client.noop()
        except (OSError, smtplib.SMTPException) as error:
            client.close()
            raise self.diagnose(error, client) from None
        client.quit_quietly()
        if code != 250:
            raise Diagnosis(f"{self.where} answered NOOP with {code} "
                            f"{reply.decode('utf-8', 'replace')}")

    def send_on(self, client: probe.Client, sender: str, recipients: Sequence[str],
                data: bytes) -> str:
        """
        Send one message on C{client} (left open for the next one). Returns the reply to
        the end of data; raises C{smtplib} or socket errors as they come.
        """
        code, reply = client.mail(sender)
        if code != 250:
            raise smtplib.SMTPSenderRefused(code, reply, sender)
        refused: dict[str, tuple[int, bytes]] = {}
        for recipient in recipients:
            code, reply = client.rcpt(recipient)
            if code not in (250, 251):
                refused[recipient] = (code, reply)
        if len(refused) == len(recipients):
            client.rset()
            raise smtplib.SMTPRecipientsRefused(refused)
        code, reply = client.data(data)
        if code != 250:
            raise smtplib.SMTPDataError(code, reply)
        text = f"{code} {reply.decode('utf-8', 'replace')}"
        if refused:
            text += "; refused: " + ", ".join(refused)
        return text
