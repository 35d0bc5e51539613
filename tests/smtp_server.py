"""A real SMTP server (aiosmtpd) for tests that need one the shared sink is not: it refuses
recipients whose local part starts with `refuse` (550, as a server that does not know the
address answers) and keeps everything else in a maildir. A message to a recipient whose local
part starts with `slowN` (`slow6-ann@x.test`) is kept at once, but the server answers its DATA
only N seconds later: a slow relay.

    python smtp_server.py PORT MAILDIR
"""
import asyncio
import mailbox
import re
import sys
import time

from aiosmtpd.controller import Controller


class Handler:
    def __init__(self, maildir):
        self.box = mailbox.Maildir(maildir, create=True)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.split("@")[0].lower().startswith("refuse"):
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown in local recipient table"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.box.add(envelope.original_content)
        delay = max((int(m.group(1)) for m in (re.match(r"slow(\d+)", a.lower()) for a in envelope.rcpt_tos) if m), default=0)
        if delay:
            await asyncio.sleep(delay)
        return "250 Message accepted for delivery"


if __name__ == "__main__":
    port, maildir = int(sys.argv[1]), sys.argv[2]
    controller = Controller(Handler(maildir), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        controller.stop()
