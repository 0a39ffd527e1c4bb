"""The last resort for a message that looks like a bounce but no parser claimed.

Human-readable bounces from MTAs without a parser follow a handful of layouts, whatever
their language: a heading that says delivery failed ("The following addresses had
permanent fatal errors", "Delivery to the following recipients failed", Exchange's
"Delivery has failed to these recipients or groups" in its localised forms) followed by
the addresses, one per line, each with its reason; ``<addr>: 550 ...`` and
``addr ... reason`` lines; labelled pairs ("Recipient: x" / "Reason: y", "Failed
recipient(s):", "RCPT TO: x" in a message summary); a session transcript
(``RCPT TO:<x>`` answered ``550``).

Only addresses in such a recipient position count, and only when an SMTP error (reply
code, enhanced status) or a failure phrase is next to them, or when they follow a failure
heading: an address that is merely mentioned must not become a suppression.  Addresses in
the quoted original (its header block, wherever the MTA pasted it, and ``>``-quoted
header lines) and in a sender position ("MAIL FROM:", "A message sent by <x>") are never
recipients.  ``X-Failed-Recipients`` is
trusted.  When the text names no recipient at all, the returned original's single ``To``
address is used, but only if the text states a failure.  A text that reports a successful
delivery and no failure (a delivery receipt without a status part) gives nobody.

The phrases come from the MTAs' own templates: Exchange's localised NDR headings, Lotus
Notes and GroupWise ("was not delivered to", "undeliverable to the following"), Apache
James ("Failed recipient(s):", "Message details:"), Zoho ("addr, ERROR CODE :550"),
sendmail-style headings, and the Japanese carriers' notices ("宛先不明", "配信できません").
"""

from __future__ import annotations

import re
from typing import Final

from dsn.address import ADDRESS, find_addresses, normalise_address
from dsn.mail import Mail, header_text
from dsn.model import MAX_RECIPIENTS
from dsn.mta.base import (
    Found,
    bounce_own_addresses,
    delay_action,
    find_reply_code,
    find_status,
    scan_text,
    with_failed_recipients_header,
)

__all__ = ["parse", "report_text", "sender_addresses"]

_A = ADDRESS.pattern

# Words that say a delivery failed, in the languages of the MTAs' localised templates.
_FAILURE_WORDS: Final = (
    # English
    r"user unknown|unknown user|no such|does not exist|doesn't exist|not found|mailbox|quota"
    r"|reject|refused|denied|invalid|disabled|unavailable|not listed|unrouteable|unknown"
    r"|blocked|spam|fail|could not|couldn't|cannot|can't|timed? ?out|expired|error|unable"
    r"|not reach|undeliverable|not be delivered|not delivered|locked|bounced|delayed"
    r"|retr(?:y|ied)|suspend|full|too large|exceed|loop|abort|did not reach|permanent"
    r"|did not receive a copy|not a valid|no longer"
    # German
    r"|unzustellbar|nicht zugestellt|zustellung[^\n]{0,60}fehlgeschlagen|fehlgeschlagen"
    r"|nicht erreicht|unbekannt|existiert nicht|nicht gefunden|abgelehnt|postfach"
    # French
    r"|non remis|pas pu [êe]tre remis|pu [êe]tre remis|impossible de (?:remettre|joindre|distribuer)"
    r"|[ée]chec|[ée]chou[ée]|inconnu|n'existe pas|injoignable|introuvable|refus[ée]"
    # Spanish
    r"|no se (?:pudo|puede) entregar|no (?:pudo|ha podido) ser entregad|error en la entrega"
    r"|no entregad|no se puede (?:llegar|entregar)|desconocid|no existe|rechazad"
    # Italian
    r"|impossibile (?:recapitare|raggiungere|consegnare)|recapito non riuscito"
    r"|non recapitabil|non recapitat|sconosciut|non esiste|non [èe] stato possibile|rifiutat"
    # Portuguese
    r"|n[ãa]o (?:foi|[ée]) poss[íi]vel entregar|falha na entrega|n[ãa]o entregue"
    r"|n[ãa]o p[ôo]de ser entregue|n[ãa]o foi entregue|desconhecid|recusad"
    # Dutch
    r"|onbestelbaar|kon niet worden (?:bezorgd|afgeleverd)|niet bezorgd|niet afgeleverd"
    r"|bezorging is mislukt|mislukt|niet bereiken|onbekend|bestaat niet|geweigerd"
    # Japanese
    r"|配信に失敗|配信できません|配信できませんでした|送信できません|送信に失敗|届けることができません"
    r"|宛先不明|不達|存在しません|配送できません|配達できません|エラー|失敗|見つかりません"
    # Chinese (simplified and traditional)
    r"|无法投递|無法投遞|投递失败|投遞失敗|传递失败|傳遞失敗|无法送达|無法送達|退信|不存在"
    r"|发送失败|發送失敗|无法传递|無法傳遞|递送失败|遞送失敗|被拒绝|被拒絕"
    # Russian
    r"|не удалось доставить|не может быть доставлен|не доставлен|недоставлен|не выполнена"
    r"|не существует|ошибка доставки|не найден|отклонен"
)
_ERROR_NEAR: Final = re.compile(
    r"(?<![\d.])[245]\d\d(?:[ -]|$)|(?<![\d.])[245]\.\d{1,3}\.\d{1,3}\b|" + _FAILURE_WORDS,
)
# A heading after which the failed addresses are listed, one a line (or "addr on date",
# "addr (reason)", "addr: reason").  Localised forms follow Exchange's, Notes' and the
# carriers' templates.
_HEADING: Final = re.compile(
    r"(?:following (?:address|recipient|user)s?(?:\(e?s\))?[^\n]{0,60}"
    r"(?:fail|error|problem|not|undeliverable|unreachable|reach|reject|bounce)"
    r"|(?:fail|error|problem|undeliverable|delivery)[^\n]{0,60}(?:following|these) "
    r"(?:address|recipient|user)"
    r"|(?:was|were|could) not (?:be )?delivered to|undeliverable to|unable to deliver to"
    r"|did not reach the following|failed recipients?(?:\(s\))?\s*(?::|-{3,})|delivery has failed to"
    r"|list of failed recipients|failed addresses follow|did not receive a copy"
    r"|could not be delivered to:|could not deliver (?:the )?message to the following"
    r"|permanent fatal errors|could not be delivered to one or more"
    r"|folgende[n]? empf[äa]nger|empf[äa]nger[^\n]{0,40}(?:fehlgeschlagen|nicht erreicht)"
    r"|destinataires?[^\n]{0,60}(?:[ée]chou|injoignable|suivant)|remise[^\n]{0,40}[ée]chou"
    r"|destinatari(?:os?)?[^\n]{0,60}(?:siguientes|fallida|grupos|seguenti|gruppi)"
    r"|(?:estos|estes|seguintes|questi) destinat"
    r"|ontvangers?[^\n]{0,40}(?:mislukt|groepen)|geadresseerden"
    r"|受信者|宛先|收件人|收件者|получател)",
)
# Labels that name a recipient on their own line, in the MTAs' languages:
# "Recipient: x", "Failed recipient: x", "Original recipient: x", "RCPT TO: x" (a summary).
_LABELLED: Final = re.compile(
    rf"^[ \t]*(?:(?:failed|original|final|intended|invalid|unknown|bad)[ \t-]+)?"
    rf"(?:recipient(?:\(s\)|s)?|e-?mail address|address|empf[äa]nger|destinataire|destinatario"
    rf"|destinat[áa]rio|ontvanger|geadresseerde|受信者|宛先|收件人|收件者|получатель|rcpt to)"
    rf"[ \t]*[:\uff1a][ \t]*[\"']?<?{_A}>?",
)
# "Unknown user: x", "宛先不明: x": a failure stated before the address, on its line.
_REASON_COLON: Final = re.compile(
    rf"^[^@\n]{{0,60}}?(?:{_FAILURE_WORDS})[^@\n:\uff1a]{{0,40}}[:\uff1a][ \t]*[\"']?<?{_A}>?[\"']?[ \t.]*$",
)
# Prose naming the recipient of the failed message: "You sent mail to x ... not a valid user",
# "Your message to x could not be delivered", in the templates' languages.
_PROSE: Final = re.compile(
    rf"(?:you sent (?:(?:a |an )?(?:mail|message|e-?mail) )?to|your (?:mail|message|e-?mail) to"
    rf"|the (?:mail|message|e-?mail) (?:you sent )?to|ihre (?:nachricht|e-mail|mail) an"
    rf"|votre (?:message|courriel|e-mail) (?:à|a|pour)|su (?:mensaje|correo) (?:a|para)"
    rf"|il (?:suo |tuo )?messaggio (?:a|per)|sua mensagem (?:a|para)|uw (?:bericht|e-mail) aan"
    rf"|ваше (?:сообщение|письмо) (?:для|на адрес)|сообщение для)"
    rf"[ \t]*[\"'(]?<?{_A}>?"
)
_ROLE: Final = re.compile(r"^(?:postmaster|mailer-daemon|abuse|hostmaster|webmaster|root)@")
# A heading with its one address on the same line: "Delivery failed for the following: x".
_INLINE_LIST: Final = re.compile(
    rf"(?:following|recipients?|addresse?s?)(?:\(e?s\))?[ \t]*:[ \t]*[\"'(]?<?{_A}>?"
)
# Zoho: "user@example.org, ERROR CODE :550 - ..."; "addr - 550 ...", "addr: 550" variants.
_COMMA_CODE: Final = re.compile(rf"^[ \t]*<?{_A}>?[ \t]*,[ \t]*(?:error|[245]\d\d\b)")
# Addresses in a sender position: never the failed recipient.
_SENDER_POSITION: Final = re.compile(
    rf"(?:sent by|message from|mail from|sender|envelope[ -]from|return-path|reply-to"
    rf"|absender|exp[ée]diteur|remitente|mittente|remetente|afzender|差出人|送信者|发件人|發件人"
    rf"|отправител\w*|^[ \t]*from)[ \t]*(?:address|:|is|was)?[ \t]*[:\uff1a]?[ \t]*[\"'(]?<?{_A}>?",
    re.M,
)
_SUCCESS: Final = re.compile(
    r"(?:has|have|was|were) (?:been )?(?:successfully )?(?:delivered|relayed)"
    r"|delivered successfully|successfully delivered|delivery (?:was )?successful"
    r"|erfolgreich zugestellt|zugestellt wurde|a [ée]t[ée] remis|fue entregad|[èe] stato recapitato"
    r"|foi entregue|is bezorgd|配信されました|已送达|已投递|доставлено",
)
_STRONG_FAILURE: Final = re.compile(
    r"(?<![\d.])[45]\d\d[ -]|(?<![\d.])[45]\.\d{1,3}\.\d{1,3}\b|not (?:be )?delivered"
    r"|undeliverable|could not|couldn't|unable to|failed|failure|fatal|rejected|unknown"
    r"|does not exist|no such|invalid|not a valid|is not valid|no longer (?:valid|active|exists?)"
    r"|not (?:an )?active|inactive|disabled|not found|no mailbox|mailbox unavailable|"
    + _FAILURE_WORDS[_FAILURE_WORDS.index("|unzustellbar") + 1 :],
)

# The quoted original: a block of at least two of its header lines (unfolded), one of them
# a header only a message carries; or a localised "original message" separator.
_MESSAGE_HEADER: Final = re.compile(
    r"^[ \t>]*(received|return-path|message-id|mime-version|content-type|dkim-signature"
    r"|x-mailer|date|from|to|cc|subject|reply-to|sender|x-[\w-]+|list-[\w-]+"
    r"|content-transfer-encoding|in-reply-to|references|authentication-results)[ \t]*:",
)
_ONLY_IN_MESSAGES: Final = frozenset(
    {
        "received",
        "return-path",
        "message-id",
        "mime-version",
        "content-type",
        "dkim-signature",
        "x-mailer",
        "date",
        "content-transfer-encoding",
        "in-reply-to",
        "references",
        "authentication-results",
    }
)
_ORIGINAL_SEPARATOR: Final = re.compile(
    r"^[ \t\-=_*#]*(?:original message|ursprüngliche nachricht|originalnachricht"
    r"|message d'origine|message original|mensaje original|messaggio originale"
    r"|mensagem original|oorspronkelijk bericht|origineel bericht|元のメッセージ|原始邮件"
    r"|原始郵件|исходное сообщение|оригинальное сообщение|headers of the original"
    r"|the original message headers|original message headers)",
    re.M,
)
_QUOTED_HEADER: Final = re.compile(r"^[ \t]*>[ \t]*[A-Za-z][\w-]*:")
# CJK text runs straight into an address ("宛先不明user@example.jp"): the address pattern
# would take the ideographs for part of the local part.
_CJK_BEFORE_ASCII: Final = re.compile(r"([\u3000-\u30ff\u3400-\u9fff\uff00-\uffef])(?=[!-~])")


def parse(mail: Mail) -> list[Found] | None:
    text = report_text(mail.text)
    low = _lower(text)
    exclude = bounce_own_addresses(mail) | sender_addresses(mail, low)
    if _SUCCESS.search(low) and not _STRONG_FAILURE.search(_SUCCESS.sub(" ", low)):
        return None  # a delivery receipt in prose
    found = _collect(text, low, exclude)
    # X-Failed-Recipients is a machine-written statement, trusted even here.
    found = with_failed_recipients_header(mail, found) or []
    if not found and mail.original is not None and _STRONG_FAILURE.search(low):
        to = [a for a in find_addresses(header_text(mail.original, "To")) if a not in exclude]
        if len(to) == 1:
            found = [Found(recipient=to[0], diagnostic=_error_lines(text))]
            found[0].status = find_status(found[0].diagnostic)
            found[0].reply_code = find_reply_code(found[0].diagnostic)
    for entry in found:
        if entry.reply_code is None:
            # Zoho and others label the reply: "ERROR CODE :550 - ...", "code: 550".
            code = _LABELLED_CODE.search(entry.diagnostic.lower())
            entry.reply_code = int(code.group(1)) if code is not None else None
        entry.action = entry.action or delay_action(mail, entry.diagnostic)
    return found or None


def report_text(text: str) -> str:
    """The report without the quoted original: cut at its separator or its header block,
    ``>``-quoted header lines blanked, CJK text parted from addresses."""
    separator = _ORIGINAL_SEPARATOR.search(_lower(text))
    if separator is not None:
        text = text[: separator.start()]
    lines = text.split("\n")
    if _mostly_quoted(lines):
        # A bounce forwarded by a person: read it without its one level of quoting.
        lines = [_UNQUOTE.sub("", line) for line in lines]
    cut = _header_block_start(lines)
    if cut is not None:
        lines = lines[:cut]
    lines = ["" if _QUOTED_HEADER.match(line) else line for line in lines]
    text = "\n".join(lines)
    if not text.isascii():
        text = _CJK_BEFORE_ASCII.sub(r"\1 ", text)
    return text


_UNQUOTE: Final = re.compile(r"^[ \t]?>[ \t]?")


def _mostly_quoted(lines: list[str]) -> bool:
    filled = [line for line in lines if line.strip()]
    quoted = sum(1 for line in filled if line.lstrip().startswith(">"))
    return len(filled) >= 4 and quoted * 2 >= len(filled)


def _header_block_start(lines: list[str]) -> int | None:
    """The first line of a run of message header lines (the pasted original) after the
    text has stated a failure: a header block before that is a forwarding's own."""
    run_start: int | None = None
    names: list[str] = []
    failure_seen = False
    for index, line in enumerate(lines):
        if not failure_seen:
            failure_seen = _STRONG_FAILURE.search(line.lower()) is not None
            continue
        match = _MESSAGE_HEADER.match(line.lower())
        if match is not None:
            if run_start is None:
                run_start, names = index, []
            names.append(match.group(1))
            if len(names) >= 2 and any(n in _ONLY_IN_MESSAGES for n in names):
                return run_start
            continue
        if run_start is not None and line[:1] in (" ", "\t") and line.strip():
            continue  # a folded header line
        run_start = None
    return None


def sender_addresses(mail: Mail, low: str) -> frozenset[str]:
    """Addresses the (lower-cased) text names in a sender position ("A message sent by
    <x>", "MAIL FROM:<x>", "Absender: x"), unless the returned original was addressed to
    that same address (a message someone sent to themselves)."""
    if "@" not in low:
        return frozenset()
    addrs = {normalise_address(m.group(1)) for m in _SENDER_POSITION.finditer(low)}
    if mail.original is not None and addrs:
        addrs -= set(find_addresses(header_text(mail.original, "To")))
    return frozenset(a for a in addrs if a)


def _collect(text: str, low: str, exclude: frozenset[str]) -> list[Found]:
    """Recipients in a recipient position with a failure next to them, in text order."""
    found: dict[str, Found] = {}
    for entry in scan_text(text, exclude=exclude):
        if _ERROR_NEAR.search(entry.diagnostic.lower()):
            found.setdefault(entry.recipient, entry)
    lines = text.split("\n")
    failure_stated = _STRONG_FAILURE.search(low) is not None
    headings = _headings(lines)
    for index, line in enumerate(lines):
        if "@" not in line or len(found) >= MAX_RECIPIENTS:
            continue
        low_line = line.lower()
        match = (
            _LABELLED.match(low_line)
            or _COMMA_CODE.match(low_line)
            or _REASON_COLON.match(low_line)
            or _INLINE_LIST.search(low_line)
        )
        heading = None if match is not None else headings[index]
        if match is None and heading is None:
            _add_prose(found, lines, index, low_line, exclude)
            continue
        addresses = [match.group(1)] if match is not None else _listed(line)
        for raw in addresses:
            addr = normalise_address(raw)
            if addr is None or addr in exclude:
                continue
            diagnostic = _explanation(lines, index, heading)
            # A labelled address needs a failure beside it; a listed one, a failure stated
            # anywhere (its heading may only say "recipients").
            if not (_ERROR_NEAR.search(diagnostic.lower()) or (heading and failure_stated)):
                continue
            known = found.get(addr)
            if known is None:
                found[addr] = _found(addr, diagnostic)
            elif not _HAS_CODE.search(known.diagnostic) and _HAS_CODE.search(diagnostic):
                found[addr] = _found(addr, f"{known.diagnostic} {diagnostic}")
        if match is None:
            _add_prose(found, lines, index, low_line, exclude)
    return list(found.values())[:MAX_RECIPIENTS]


def _add_prose(
    found: dict[str, Found], lines: list[str], index: int, low_line: str, exclude: frozenset[str]
) -> None:
    for match in _PROSE.finditer(low_line):
        addr = normalise_address(match.group(1))
        if addr is None or addr in exclude or addr in found or _ROLE.match(addr):
            continue
        diagnostic = _explanation(lines, index, None)
        if _STRONG_FAILURE.search(diagnostic.lower()):
            found[addr] = _found(addr, diagnostic)


_LABELLED_CODE: Final = re.compile(r"\bcode[ \t]*:?[ \t]*([245][0-5]\d)\b")
_HAS_CODE: Final = re.compile(r"(?<![\d.])[245]\d\d(?:[ -]|$)|(?<![\d.])[245]\.\d{1,3}\.\d{1,3}")
# A line in a heading's list: the address alone, bulleted, or followed by a reason or a date.
_LIST_ITEM: Final = re.compile(
    rf"^[ \t]*(?:[*\-•·>][ \t]*|\d+[.)][ \t]*)?(?:\"[^\"\n@]{{0,80}}\"[ \t]*(?=<))?"
    rf"[\"'(]?<?{_A}>?[\"')]?[ \t]*"
    rf"(?:$|[:\uff1a,;]|\.\.\.|\(|\[|[ \t]-|[ \t]on[ \t]|[ \t]le[ \t]|[ \t]am[ \t]|[ \t]el[ \t]"
    rf"|[ \t]il[ \t]|[ \t]em[ \t]|[ \t]op[ \t]|[ \t]+\S)",
)


def _listed(line: str) -> list[str]:
    match = _LIST_ITEM.match(line)
    return [match.group(1)] if match is not None else []


def _headings(lines: list[str]) -> list[str | None]:
    """For each line, the failure heading it is listed under, if any: the last heading above
    it with no more than three lines of other prose between list items (a recipient's
    explanation), however long the list."""
    active: list[str | None] = []
    heading: str | None = None
    prose = 0
    for line in lines:
        active.append(heading)
        stripped = line.strip()
        if not stripped:
            continue
        if "@" not in stripped and _HEADING.search(stripped.lower()):
            heading, prose = stripped, 0
        elif "@" in stripped:
            if _HEADING.search(stripped.lower()):
                heading = stripped  # a heading that names its first address itself
            prose = 0
        else:
            prose += 1
            if prose > 3:
                heading = None
    return active
    return None


def _explanation(lines: list[str], index: int, heading: str | None, limit: int = 8) -> str:
    """The address line and the lines after it up to the next address or blank pair."""
    chunk = [heading] if heading else []
    chunk.append(lines[index])
    blanks = 0
    for line in lines[index + 1 : index + 1 + limit]:
        if not line.strip():
            blanks += 1
            if blanks >= 2:
                break
            continue
        if ADDRESS.search(line) and _LIST_ITEM.match(line):
            break
        blanks = 0
        chunk.append(line)
    return " ".join(" ".join(chunk).split())


def _found(addr: str, diagnostic: str) -> Found:
    return Found(
        recipient=addr,
        diagnostic=diagnostic,
        status=find_status(diagnostic),
        reply_code=find_reply_code(diagnostic),
    )


def _lower(text: str) -> str:
    """Lower case, same length: the patterns here are written in lower case and searched
    without re.I, several times faster on their long alternations."""
    lowered = text.lower()
    if len(lowered) != len(text):  # a few characters change length when lower-cased
        lowered = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
    return lowered


def _error_lines(text: str) -> str:
    lines = [line.strip() for line in text.split("\n") if _ERROR_NEAR.search(line.lower())]
    return " ".join(lines[:4])
