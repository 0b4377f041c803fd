"""Building e-mails: Jinja2 templates (vi and en) rendered into multipart/alternative bytes, ready for SMTP.

The MIME is written by hand rather than with `email.message.EmailMessage`: its policy machinery (header
parsing and folding, content managers) costs more than the SMTP conversation itself at a thousand e-mails
a second. Each (template, locale) keeps a compiled skeleton; per message there are three small renders
(subject, text, HTML), two base64 encodes and one join. Bodies are base64 (safe for any server, any line
length, any Vietnamese text); headers with non-ASCII text are RFC 2047 encoded words in UTF-8.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import formatdate, parseaddr
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, Template, select_autoescape
from markupsafe import Markup, escape

from notifier.policy import CATEGORY_OF, LOCALES, TEMPLATES

CATEGORY_LABELS = {
    ("upgrades", "en"): "upgrade notices",
    ("upgrades", "vi"): "thông báo nâng cấp",
    ("news", "en"): "product news",
    ("news", "vi"): "tin sản phẩm",
}
# Printable ASCII without < > and spaces; used with fullmatch, since "$" would let a final "\n" through and
# that newline would add a line to the headers.
MESSAGE_ID_RE = re.compile(r"<[!-;=?-~]{1,200}@[!-;=?-~]{1,200}>")
_WHITESPACE = re.compile(r"\s+")
# What may go into an attachment's MIME headers as is (the request's model allows no more).
_FILENAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_CONTENT_TYPE = re.compile(r"^[a-z]+/[a-z0-9.+-]+$")
_ENCODED_WORD_BYTES = 39  # 52 base64 characters: a word of 64, and "Subject: " plus one word within 76


class RenderError(ValueError):
    """A request that cannot become an e-mail (bad address, template error): sending it again will not help."""


@dataclass(frozen=True)
class Unsubscribe:
    url: str
    mailto: str
    category: str


@dataclass(frozen=True)
class FileAttachment:
    """A file to attach (the request's `attachments`, already bounded and typed by the request's model)."""

    filename: str
    content_type: str
    content: str


@dataclass(frozen=True)
class Outgoing:
    """One e-mail ready for SMTP: the envelope and the bytes of the message."""

    sender: str
    recipient: str
    data: bytes


def paragraphs(text: str) -> Markup:
    """Plain text into HTML: escaped, blank lines between paragraphs, single newlines as line breaks."""
    parts = [escape(p.strip("\n")) for p in re.split(r"\n\s*\n", text.replace("\r\n", "\n")) if p.strip()]
    return Markup("</p>\n<p>").join(Markup("<br>\n").join(part.split("\n")) for part in parts)


def new_environment() -> Environment:
    env = Environment(
        loader=PackageLoader("notifier", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=True, default=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,
    )
    env.filters["paragraphs"] = paragraphs
    # Without Jinja's default globals (range, dict, lipsum, cycler, joiner, namespace), which no template here
    # uses: every render copied them into its context, and again for the layout it extends (half its CPU).
    env.globals.clear()
    return env


@dataclass(frozen=True)
class _Skeleton:
    text: Template
    html: Template
    language: bytes


class Composer:
    """Renders and assembles e-mails; one per process, built once (templates compiled, headers prepared)."""

    def __init__(self, mail_from: str, env: Environment | None = None) -> None:
        env = env or new_environment()
        self._skeletons = {
            (name, locale): _Skeleton(
                env.get_template(f"{name}.{locale}.txt"),
                env.get_template(f"{name}.{locale}.html"),
                f"Content-Language: {locale}\r\n".encode(),
            )
            for name in TEMPLATES
            for locale in LOCALES
        }
        display, address = parseaddr(mail_from)
        if not address or not address.isascii():
            raise ValueError("SPM_MAIL_FROM must hold an ASCII address")
        self.sender = address
        self._from = b"From: " + format_address(display, address).encode() + b"\r\n"
        # A base64 body never holds "=_", so the boundary needs no randomness of its own to stay out of the
        # parts; a random prefix and a counter make it unique all the same, without a system call per e-mail.
        self._boundary = "=_spm_" + os.urandom(8).hex() + "_"
        self._count = 0
        self._date_second = -1
        self._date = b""

    def compose(
        self,
        *,
        template: str,
        locale: str,
        email: str,
        name: str | None,
        context: dict[str, Any],  # the template's variables, checked by its model in notifier.policy
        message_id: str,
        in_reply_to: str | None = None,
        unsubscribe: Unsubscribe | None = None,
        attachments: Sequence[FileAttachment] = (),
    ) -> Outgoing:
        skeleton = self._skeletons.get((template, locale))
        if skeleton is None:
            raise RenderError(f"no template {template!r} in {locale!r}")
        recipient = _envelope_address(email)
        variables = {**context, "name": _one_line(name) if name else None, "locale": locale}
        if unsubscribe is not None:
            variables["unsubscribe_url"] = unsubscribe.url
            variables["category_label"] = CATEGORY_LABELS[(unsubscribe.category, locale)]
        else:
            variables["unsubscribe_url"] = None
        try:
            # The subject block and the text share one context: building a context is a good part of a render.
            text_context = skeleton.text.new_context(variables)
            subject = _one_line("".join(skeleton.text.blocks["subject"](text_context)))
            text = "".join(skeleton.text.root_render_func(text_context))
            variables["mail_subject"] = subject
            html = skeleton.html.render(variables)
        except Exception as exc:  # jinja2's UndefinedError, TypeError from odd context values...
            raise RenderError(f"template {template}.{locale} failed: {type(exc).__name__}") from exc

        self._count += 1
        boundary = f"{self._boundary}{self._count:x}"
        headers = [
            self._from,
            b"To: ",
            format_address(name or "", recipient).encode(),
            b"\r\nSubject: ",
            encode_header_text(subject, len("Subject: ")).encode(),
            b"\r\nDate: ",
            self._now(),
            b"\r\nMessage-ID: ",
            message_id.encode(),
            b"\r\n",
        ]
        if in_reply_to and MESSAGE_ID_RE.fullmatch(in_reply_to):
            reply = in_reply_to.encode()
            headers += [b"In-Reply-To: ", reply, b"\r\nReferences: ", reply, b"\r\n"]
        else:
            headers.append(b"Auto-Submitted: auto-generated\r\n")
        if unsubscribe is not None:
            headers += [
                b"List-Unsubscribe: <",
                unsubscribe.url.encode(),
                b">,\r\n <",
                unsubscribe.mailto.encode(),
                b">\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
            ]
        marker = boundary.encode()
        mixed = marker + b"m"
        headers += [skeleton.language, b"MIME-Version: 1.0\r\n"]
        if attachments:
            # multipart/mixed: the text and HTML alternatives first, then each file.
            headers += [b'Content-Type: multipart/mixed; boundary="', mixed, b'"\r\n\r\n--', mixed, b"\r\n"]
        headers += [
            b'Content-Type: multipart/alternative; boundary="',
            marker,
            b'"\r\n\r\n--',
            marker,
            b'\r\nContent-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: base64\r\n\r\n',
            _base64_body(text),
            b"--",
            marker,
            b'\r\nContent-Type: text/html; charset="utf-8"\r\nContent-Transfer-Encoding: base64\r\n\r\n',
            _base64_body(html),
            b"--",
            marker,
            b"--\r\n",
        ]
        if attachments:
            for attachment in attachments:
                headers += [b"--", mixed, b"\r\n", _attachment_part(attachment)]
            headers += [b"--", mixed, b"--\r\n"]
        return Outgoing(self.sender, recipient, b"".join(headers))

    def _now(self) -> bytes:
        # formatdate is slow enough to matter at this rate, and a Date is only precise to the second anyway.
        now = time.time()
        second = int(now)
        if second != self._date_second:
            self._date = formatdate(now, usegmt=True).encode()
            self._date_second = second
        return self._date


def stable_message_id(key: str, mail_from: str) -> str:
    """A Message-ID derived from the delivery's key, so every attempt of one delivery carries the same one."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return f"<n-{digest}@{_message_id_domain(mail_from)}>"


@functools.lru_cache(maxsize=8)
def _message_id_domain(mail_from: str) -> str:
    # parseaddr costs more than the rest of recording a request's Message-ID; SPM_MAIL_FROM does not change.
    return parseaddr(mail_from)[1].rsplit("@", 1)[-1] or "localhost"


def usable_message_id(value: str | None) -> str | None:
    return value if value and MESSAGE_ID_RE.fullmatch(value) else None


def _one_line(text: str) -> str:
    """No line breaks or runs of blanks in a header value: a newline there would start a new header."""
    return _WHITESPACE.sub(" ", text).strip()


def _envelope_address(email: str) -> str:
    address = email.strip()
    local, _, domain = address.rpartition("@")
    if not local or not domain or any(c in address for c in '<>"\\ \r\n\t,;()[]'):
        raise RenderError("recipient address is not usable")
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise RenderError("recipient domain cannot be encoded") from exc
    if not local.isascii():
        raise RenderError("recipient address needs SMTPUTF8, which this notifier does not use")
    return f"{local}@{domain}"


def _attachment_part(attachment: FileAttachment) -> bytes:
    if not _FILENAME.match(attachment.filename) or not _CONTENT_TYPE.match(attachment.content_type):
        raise RenderError("attachment name or type is not usable")
    name = attachment.filename.encode()
    return (
        b"Content-Type: "
        + attachment.content_type.encode()
        + b'; charset="utf-8"; name="'
        + name
        + b'"\r\nContent-Disposition: attachment; filename="'
        + name
        + b'"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
        + _base64_lines(attachment.content.encode())  # the file's bytes as they are, line ends included
    )


def _base64_body(text: str) -> bytes:
    return _base64_lines(text.replace("\r\n", "\n").replace("\n", "\r\n").encode())


def _base64_lines(data: bytes) -> bytes:
    encoded = binascii.b2a_base64(data, newline=False)
    # Lines of 76 characters (RFC 2045), cut in one pass rather than base64.encodebytes' and a replace after it.
    return b"\r\n".join([encoded[i : i + 76] for i in range(0, len(encoded), 76)]) + b"\r\n"


_ATEXT_PHRASE = re.compile(r"^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~ ]*$")


def format_address(name: str, address: str) -> str:
    """`Name <address>` with the name as it must travel: as is, quoted, or RFC 2047 encoded words."""
    name = _one_line(name)
    if not name:
        return address
    if name.isascii():
        if _ATEXT_PHRASE.match(name) and "=?" not in name:
            return f"{name} <{address}>"
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{quoted}" <{address}>'
    return f"{encode_words(name)} <{address}>"


@functools.lru_cache(maxsize=4096)
def encode_header_text(text: str, used: int = 0) -> str:
    """An unstructured header value (Subject): ASCII folded at spaces, otherwise UTF-8 encoded words."""
    if text.isascii() and "=?" not in text:
        return _fold_ascii(text, used)
    return encode_words(text)


@functools.lru_cache(maxsize=4096)
def encode_words(text: str) -> str:
    """RFC 2047 'B' encoded words of at most 64 characters, one per folded line, never splitting a character."""
    data = text.encode()
    words: list[str] = []
    start = 0
    while start < len(data):
        end = min(start + _ENCODED_WORD_BYTES, len(data))
        # Back off from the middle of a UTF-8 sequence: continuation bytes are 0b10xxxxxx.
        while end < len(data) and data[end] & 0xC0 == 0x80:
            end -= 1
        words.append(_word(data[start:end]))
        start = end
    return "\r\n ".join(words)


def _word(data: bytes) -> str:
    return "=?utf-8?b?" + base64.b64encode(data).decode() + "?="


def _fold_ascii(text: str, used: int) -> str:
    if used + len(text) <= 78:
        return text
    lines: list[str] = []
    line = ""
    limit = 78 - used
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) > limit:
            lines.append(line)
            line, limit = word, 77
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return "\r\n ".join(lines)


def unsubscribe_for(purpose: str) -> str | None:
    """The unsubscribe category of a purpose's mail, or None when it carries no unsubscribe link."""
    return CATEGORY_OF.get(purpose)
