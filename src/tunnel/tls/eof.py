"""One EOF rule for every context Tunnel speaks TLS with, whatever the interpreter.

OpenSSL 3 reads a transport EOF in the middle of a TLS exchange as an error
(``UNEXPECTED_EOF_WHILE_READING``) and, in a handshake, answers it with a fatal alert:
a ClientHello cut short by a FIN or by the handshake timeout gets ``decode_error``.
CPython 3.10.0 to 3.11.2 turned that off in every new ``SSLContext`` (bpo-43794 set
``OP_IGNORE_UNEXPECTED_EOF`` by default); 3.11.3 took the default back out (gh-95494).
With the option set, OpenSSL takes the EOF for a close_notify: the handshake ends with
``SSL_ERROR_ZERO_RETURN`` and no alert, so on Debian 12's python3 (3.11.2) a truncated
handshake would end in a bare FIN instead of the alert both data planes send elsewhere.
Clearing the option gives 3.11.2 the behaviour of 3.11.3 and later. Where a bare FIN
after the handshake should end a stream like close_notify, the compiled plane sets the
option per connection once the handshake is done; the Python plane never shows the
memory BIO an EOF after the handshake.
"""

from __future__ import annotations

import ssl


def strict_eof(ctx: ssl.SSLContext) -> ssl.SSLContext:
    """Clear ``OP_IGNORE_UNEXPECTED_EOF`` on ``ctx`` (in place) and return ``ctx``."""
    ctx.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF
    return ctx
