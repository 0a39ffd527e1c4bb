"""The bounce parsers, tried in the one order written here.

Order, and why:

0. Vendor reports whose status part needs the vendor's own words beside it, each claimed
   only by a header, sender or subject its vendor alone writes, and read with
   ``rfc3464``'s reader: ``powermta`` (keeps X-PowerMTA-BounceCategory), ``mcafee`` (its
   "<addr> (reason)" line explains a bare status part), ``barracuda`` (its verdict),
   ``amavis`` (a content verdict, also in notices without a status part), ``opensmtpd``
   (bounce.c's notice says an envelope its status part calls "delayed" has expired; its
   plain-text notices without a status part are read here too, by the same marker).
1. ``rfc3464`` — a ``message/delivery-status`` part is structured data the reporting MTA
   wrote for machines; when present it beats anything read from prose.
2. ``amazonses`` — JSON event notifications: unmistakable, and prose scanning would read
   addresses out of the JSON blindly.
2a. Mailbox providers and Japanese carriers whose notices have no status part, each claimed
   only by its provider's own marks (sender, ``X-`` header, ``Received`` host) together with
   its template's opening line: ``zoho`` (Exim's words, Zoho's header), ``verizon`` (vtext,
   vzwpix), ``ezweb`` (au EZweb), ``biglobe``, ``googlegroups``, ``aol`` (legacy text),
   ``yahoo`` (legacy text, before ``qmail`` whose format it shares), ``sina``.  T-Online's
   notices keep Smail 3's banners and are read by ``smail`` below.  Before 2b and the
   families: a provider's template imitates a family (Zoho Exim's, Yahoo! qmail's) but names its recipients its own way.
2b. Appliances, gateways and legacy formats with no status part, each recognised by a
   header or layout line of its own; before the MTA families because several imitate one
   (``mxlogic`` writes Exim's text, ``activehunter`` and ``x1`` sendmail's markers, ``x4``
   qmail's records): ``mxlogic``, ``activehunter``, ``surfcontrol``, ``mfilter``,
   ``mailfoundry``, ``trendmicro`` (InterScan), ``smartermail``, ``mimecast`` (after
   ``rfc3464``: its status part, when it sends one, says what its text says), ``x1`` ...
   ``x6`` (no ``x5``: a status part nested in a forwarded report, which ``rfc3464`` reads).
3. Families identified by their own words, most specific first, so a generic family
   cannot claim a message a specific one understands better: ``gmail`` (Google sender
   and its phrases) before ``exim`` (Gmail copies Exim's X-Failed-Recipients header);
   then the MTA families identified by their own template lines, in one block:
   ``apachejames`` (before ``qmail``: James' bounce reuses qmail-send's "I'm afraid I
   wasn't able to deliver your message"),
   ``courier`` (its notice without the status part), ``communigate`` (CommuniGate Pro),
   ``dragonfly`` (dma), ``hmailserver`` (before ``exchange``, whose opening line it
   shares), ``mdaemon`` (and SecurityGateway), ``fml`` (list manager refusals),
   ``messagingserver`` (Oracle/Sun text records, Netscape's "Mail System Error" notices
   whose status part names no recipient), ``groupwise`` (GroupWise Internet Agent),
   ``smail`` (Smail 3's section banners, kept by T-Online's mailer), ``smtpsvc``
   (IIS SMTP service notices without a status part), ``legacy`` (LSMTP, E500, a 1990s
   university mailer, MessageSwitch/Symantec delay warnings);
   then ``exim``, ``postfix``, ``qmail`` (also Yahoo! and QSBMF writers), ``sendmail``
   (also V5 sendmail and imitators); ``exchange`` (2003 and the Exchange 2007+/Office 365
   text notices); ``domino``, ``notes``, ``mailmarshal``; ``imail`` (by its X-Mailer) and
   ``kddi`` (whose notices come from ``no-reply@`` with the subject "Mail", so only its
   own parser can claim them).

Every parser returns ``None`` for messages that are not its format.  The text scanner in
``dsn.mta.fallback`` is not in this list: it runs only for messages that look like bounces
after every parser declined.
"""

from __future__ import annotations

from typing import Final

from dsn.mta import (
    activehunter,
    amavis,
    amazonses,
    aol,
    apachejames,
    barracuda,
    biglobe,
    communigate,
    courier,
    domino,
    dragonfly,
    exchange,
    exim,
    ezweb,
    fml,
    gmail,
    googlegroups,
    groupwise,
    hmailserver,
    imail,
    kddi,
    legacy,
    mailfoundry,
    mailmarshal,
    mcafee,
    mdaemon,
    messagingserver,
    mfilter,
    mimecast,
    mxlogic,
    notes,
    opensmtpd,
    postfix,
    powermta,
    qmail,
    rfc3464,
    sendmail,
    sina,
    smail,
    smartermail,
    smtpsvc,
    surfcontrol,
    trendmicro,
    verizon,
    x1,
    x2,
    x3,
    x4,
    x6,
    yahoo,
    zoho,
)
from dsn.mta.base import Parser

__all__ = ["PARSERS"]

PARSERS: Final[tuple[tuple[str, Parser], ...]] = (
    # vendor reports with a status part
    ("powermta", powermta.parse),
    ("mcafee", mcafee.parse),
    ("barracuda", barracuda.parse),
    ("amavis", amavis.parse),
    ("opensmtpd", opensmtpd.parse),
    ("rfc3464", rfc3464.parse),
    ("amazonses", amazonses.parse),
    # mailbox providers and Japanese carriers without a status part
    ("zoho", zoho.parse),
    ("verizon", verizon.parse),
    ("ezweb", ezweb.parse),
    ("biglobe", biglobe.parse),
    ("googlegroups", googlegroups.parse),
    ("aol", aol.parse),
    ("yahoo", yahoo.parse),
    ("sina", sina.parse),
    # appliances, gateways and legacy formats without one
    ("mxlogic", mxlogic.parse),
    ("activehunter", activehunter.parse),
    ("surfcontrol", surfcontrol.parse),
    ("mfilter", mfilter.parse),
    ("mailfoundry", mailfoundry.parse),
    ("trendmicro", trendmicro.parse),
    ("smartermail", smartermail.parse),
    ("mimecast", mimecast.parse),
    ("x1", x1.parse),
    ("x2", x2.parse),
    ("x3", x3.parse),
    ("x4", x4.parse),
    ("x6", x6.parse),
    ("gmail", gmail.parse),
    # MTA families identified by their own template lines
    ("apachejames", apachejames.parse),
    ("courier", courier.parse),
    ("communigate", communigate.parse),
    ("dragonfly", dragonfly.parse),
    ("hmailserver", hmailserver.parse),
    ("mdaemon", mdaemon.parse),
    ("fml", fml.parse),
    ("messagingserver", messagingserver.parse),
    ("groupwise", groupwise.parse),
    ("smail", smail.parse),
    ("smtpsvc", smtpsvc.parse),
    ("legacy", legacy.parse),
    ("exim", exim.parse),
    ("postfix", postfix.parse),
    ("qmail", qmail.parse),
    ("sendmail", sendmail.parse),
    ("exchange", exchange.parse),
    ("domino", domino.parse),
    ("notes", notes.parse),
    ("mailmarshal", mailmarshal.parse),
    ("imail", imail.parse),
    ("kddi", kddi.parse),
)
