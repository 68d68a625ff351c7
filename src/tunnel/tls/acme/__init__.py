"""ACME certificates on disk: where they live, placeholders, challenge certificates.

The files in ``state_dir`` are the only thing the ACME process (:mod:`tunnel.process.acme`)
and the listeners share: it writes certificates and pending challenges there, and every
worker of every instance that shares the directory reads them. Renewal timing
(:mod:`tunnel.tls.acme.renewal`) is pure.
"""

# The TLS-ALPN-01 protocol name (RFC 8737). Here rather than in ``challenge``, so that the
# data plane can recognise a validation without importing what challenges need (cryptography).
ACME_TLS_1 = "acme-tls/1"
