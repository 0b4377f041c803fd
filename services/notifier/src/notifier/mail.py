"""Building one e-mail from a request: headers, language, body."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formataddr, formatdate

from spm_common.notifications import NotificationRequested

SUBJECTS = {
    ("contact-ack", "en"): "We received your message",
    ("contact-ack", "vi"): "Chúng tôi đã nhận được tin nhắn của bạn",
    ("contact-reply", "en"): "Re: your message to SPM Group",
    ("contact-reply", "vi"): "Re: tin nhắn của bạn gửi SPM Group",
}
BODIES = {
    (
        "contact-ack",
        "en",
    ): "Hello {name},\n\nThank you for writing to SPM Group. We received your message{about}"
    " and will answer it soon.\n\nSPM Group\n",
    (
        "contact-ack",
        "vi",
    ): "Xin chào {name},\n\nCảm ơn bạn đã liên hệ với SPM Group. Chúng tôi đã nhận được tin nhắn"
    " của bạn{about} và sẽ sớm trả lời.\n\nSPM Group\n",
    ("contact-reply", "en"): "Hello {name},\n\n{reply_body}\n\nSPM Group\n",
    ("contact-reply", "vi"): "Xin chào {name},\n\n{reply_body}\n\nSPM Group\n",
}


def build_message(request: NotificationRequested, message_id: str, mail_from: str) -> EmailMessage:
    key = (request.template, request.locale)
    subject = request.context.get("subject")
    about = (f' "{subject}"' if request.locale == "en" else f" “{subject}”") if subject else ""
    message = EmailMessage()
    message["From"] = mail_from
    message["To"] = formataddr((request.recipient.name or "", request.recipient.email))
    message["Subject"] = SUBJECTS[key]
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = message_id
    if request.in_reply_to:
        message["In-Reply-To"] = request.in_reply_to
        message["References"] = request.in_reply_to
    body = BODIES[key].format(
        name=request.recipient.name or "", about=about, reply_body=request.context.get("reply_body", "")
    )
    message.set_content(body)
    return message
