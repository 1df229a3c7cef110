"""
Counters the daemon keeps about itself, for C{/metrics} (Prometheus text) and
C{/api/v1/info}. One registry per daemon (not prometheus_client's global one), so tests
and several daemons in one process do not share numbers.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest


class Metrics:
    """What SMTP, auth and the index report as they work."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.started = time.time()
        self.received = Counter("mailsink_messages_received", "Messages stored",
                                ["listener"], registry=self.registry)
        self.received_bytes = Counter("mailsink_received_bytes", "Bytes of messages stored",
                                      ["listener"], registry=self.registry)
        self.rejected = Counter("mailsink_messages_rejected",
                                "Messages refused (too big, bad lines, storage failures)",
                                ["listener", "reason"], registry=self.registry)
        self.connections = Gauge("mailsink_connections", "Open connections (SMTP, POP3, IMAP)",
                                 ["listener"], registry=self.registry)
        self.tls_handshakes = Counter("mailsink_tls_handshakes",
                                      "TLS handshakes completed (SMTP, POP3), by TLS version",
                                      ["listener", "version"], registry=self.registry)
        self.auth_failures = Counter("mailsink_auth_failures",
                                     "Failed logins (SMTP AUTH, POP3, IMAP)",
                                     ["listener"], registry=self.registry)
        self.sessions = Counter("mailsink_smtp_sessions",
                                "SMTP sessions ended, by outcome (delivered, refused, failed, "
                                "no-mail, dropped)", ["listener", "outcome"],
                                registry=self.registry)
        self.messages = Gauge("mailsink_messages", "Messages in the index now",
                              registry=self.registry)
        self.deleted = Counter("mailsink_messages_deleted", "Messages deleted or pruned",
                               ["how"], registry=self.registry)
        self.waiting = Gauge("mailsink_api_waiting",
                             "API requests waiting for mail (?wait=) now",
                             registry=self.registry)

    def prometheus_text(self) -> bytes:
        """The registry in Prometheus' text exposition format."""
        return generate_latest(self.registry)

    def total(self, counter: Counter) -> int:
        """The sum of a counter over all its labels."""
        return int(sum(sample.value for metric in counter.collect()
                       for sample in metric.samples if sample.name.endswith("_total")))
