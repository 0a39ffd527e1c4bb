"""Auto-replies (RFC 3834) and the other automatic answers that are not bounces.

RFC 3834 §5 asks responders to send ``Auto-Submitted: auto-replied``; many do not, so the
usual vendor headers (X-Autoreply, X-Autorespond, Precedence: auto_reply) and subjects
("Out of Office", "Automatic reply", "Auto reply", vacation notices) count too, as do
challenge-response systems.  Exim also marks its *bounces* auto-replied, so the caller asks
this only of messages that do not look like bounces.
"""

from __future__ import annotations

import re
from typing import Final

from dsn.mail import Mail

__all__ = ["is_auto_reply", "is_challenge", "looks_like_bounce"]

_AUTO_HEADERS: Final = ("X-Autoreply", "X-Autorespond", "X-Autoresponder", "X-Vacation")
_CHALLENGE_HEADERS: Final = ("X-Boxtrapper", "X-Spamarrest", "X-Challenge", "X-Bluebottle-Request")
_AUTO_SUBJECT: Final = re.compile(
    r"^(?:re:\s*)?(?:out of (?:the )?office|auto(?:matic)?[ _-]?(?:reply|response|antwort|answer)"
    r"|autoreply|autoresponse|away from|away until|on vacation|vacation|on leave|absence"
    r"|abwesenheit|abwesend|autosvar|r[ée]ponse automatique|respuesta autom[áa]tica"
    r"|risposta automatica|automaattinen vastaus|fuera de la oficina|office closed"
    r"|absent du bureau|absente du bureau|fuori sede|fuori ufficio|resposta autom[áa]tica"
    r"|ausente|afwezig|automatisch antwoord|niet aanwezig|不在|自動応答|自动回复|自動回覆"
    r"|автоответ|автоматический ответ|нет на месте|в отпуске"
    r"|please confirm your (?:message|e-?mail)|verify your (?:e-?mail|message))",
    re.I,
)
# Challenge-response systems (Boxbe's guest list, Spam Arrest, BoxTrapper, Mailin-style
# filters): a held message and a request to prove the sender is a person.  Phrases from their
# notices; each names a confirmation, never a delivery failure on its own.
_CHALLENGE_TEXT: Final = re.compile(
    r"confirm (?:that )?you are (?:a )?(?:human|real person|person|not a (?:robot|spammer))"
    r"|verify (?:that )?you are (?:a )?(?:human|real person|person|not a (?:robot|spammer))"
    r"|prove (?:that )?you are (?:a )?(?:human|real person|person)"
    r"|challenge[- ]response|(?:add|put) yourself (?:to|on) [^\n]{0,40}(?:guest|white|allow|safe)"
    r"|guest ?list|to complete the verification",
)  # searched in lower-cased text: several times faster than re.I on an alternation
_BOUNCE_SENDER: Final = re.compile(
    r"mailer[-_ ]?daemon|mail-daemon|post_?master|mail ?delivery|mail ?administrator|mailadmin"
    r"|mdaemon|system administrator|microsoftexchange"
    r"|mail system|mail-router|bounce|mailmaster|notification|returned",
    re.I,
)
_BOUNCE_SUBJECT: Final = re.compile(
    r"undeliver|undelivered|not delivered|non[- ]?deliver|delivery (?:status|fail|problem|report"
    r"|has failed|notification|error|warning)|mail delivery|failure notice|returned mail"
    r"|returned to sender|could not be delivered|delivery failure|mail system error"
    r"|rejected|failed delivery|warning: could not send|unzustellbar|nicht zustellbar"
    r"|returned message"
    r"|non remis|no entregado|permanent error|message not delivered|mail failure|bounce"
    # localised subjects of the MTAs' notices (Exchange, Notes, carriers, webmail providers)
    r"|non distribuable|non recapitabile|non consegnat|n[ãa]o (?:entregue|foi entregue)"
    r"|onbestelbaar|niet bezorgd|no se puede entregar|imposible entregar|zustellungsfehler"
    r"|fehlgeschlagen|[ée]chec de (?:la )?(?:remise|distribution)|配信エラー|配信不能|不達"
    r"|返送|未送達|送信エラー|退信|未送达|无法投递|無法投遞|投递失败|投遞失敗|传递失败"
    r"|недоставленн|не доставлено|ошибка доставки|возврат",
    re.I,
)


def looks_like_bounce(mail: Mail) -> bool:
    """From a mailer daemon, a postmaster or the null sender, or a subject saying delivery
    failed."""
    # A notice with an empty From ("<>", as some MTAs write the null sender there too).
    if mail.sender.strip() in ("<>", '"" <>') and "From" in mail.message:
        return True
    return bool(_BOUNCE_SENDER.search(mail.sender) or _BOUNCE_SUBJECT.search(mail.subject))


def is_challenge(mail: Mail) -> bool:
    """A challenge-response notice: a header such systems write, or their request to confirm
    that the sender is a person, in a message that carries no delivery-status part."""
    if mail.status_texts or mail.message.get("X-Failed-Recipients") is not None:
        return False
    msg = mail.message
    if any(msg.get(name) is not None for name in _CHALLENGE_HEADERS):
        return True
    text = f"{mail.subject}\n{mail.text[:4000]}".lower()
    return _CHALLENGE_TEXT.search(text) is not None


def is_auto_reply(mail: Mail) -> bool:
    msg = mail.message
    submitted = str(msg.get("Auto-Submitted", "")).strip().lower()
    if submitted.startswith("auto-replied"):
        return True
    for name in _AUTO_HEADERS + _CHALLENGE_HEADERS:
        if msg.get(name) is not None:
            return True
    if str(msg.get("X-Apple-Action", "")).strip().lower().startswith("vacation"):
        return True  # Apple's iCloud vacation responder
    precedence = str(msg.get("Precedence", "")).strip().lower()
    if precedence == "auto_reply":
        return True
    if str(msg.get("X-Auto-Response-Suppress", "")) and "auto" in mail.subject.lower():
        return True
    return bool(_AUTO_SUBJECT.search(mail.subject))
