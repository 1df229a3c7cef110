"""POP3 (RFC 1939 with CAPA, UIDL, TOP, USER/PASS, SASL PLAIN, STLS) over the Maildir."""
