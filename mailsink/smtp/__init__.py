"""The SMTP server: protocol, DATA decoding, listener factory and diagnostics."""
