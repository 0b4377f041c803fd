"""Every word the console shows, in Vietnamese (the default) and English."""

from __future__ import annotations

from typing import Literal

Language = Literal["vi", "en"]
LANGUAGES: tuple[Language, ...] = ("vi", "en")
DEFAULT: Language = "vi"

TEXTS: dict[str, tuple[str, str]] = {
    # key: (vi, en)
    "app_name": ("Bảng điều khiển SPM", "SPM console"),
    "skip": ("Bỏ qua, đến nội dung chính", "Skip to the main content"),
    "language": ("Ngôn ngữ", "Language"),
    "switch_language": ("Đổi ngôn ngữ", "Switch language"),
    "lang_vi": ("Tiếng Việt", "Tiếng Việt (Vietnamese)"),
    "lang_en": ("English (Tiếng Anh)", "English"),
    "login_title": ("Đăng nhập", "Log in"),
    "email": ("Địa chỉ e-mail", "E-mail address"),
    "password": ("Mật khẩu", "Password"),
    "login": ("Đăng nhập", "Log in"),
    "logout": ("Đăng xuất", "Log out"),
    "signed_in_as": ("Đang đăng nhập:", "Signed in as"),
    "login_failed": ("Sai địa chỉ e-mail hoặc mật khẩu.", "Wrong e-mail address or password."),
    "login_rate_limited": (
        "Quá nhiều lần đăng nhập sai. Vui lòng thử lại sau {seconds} giây.",
        "Too many failed logins. Please try again in {seconds} seconds.",
    ),
    "logged_out": ("Bạn đã đăng xuất.", "You have logged out."),
    "session_ended": (
        "Phiên làm việc đã hết hạn. Vui lòng đăng nhập lại.",
        "Your session has ended. Please log in again.",
    ),
    "nav": ("Điều hướng", "Navigation"),
    "inbox": ("Hộp thư", "Inbox"),
    "operators": ("Tài khoản vận hành", "Operator accounts"),
    "change_password": ("Đổi mật khẩu", "Change password"),
    "must_change": (
        "Mật khẩu này chỉ dùng một lần. Hãy đặt mật khẩu mới để tiếp tục.",
        "This password was for one use only. Set a new password to go on.",
    ),
    "current_password": ("Mật khẩu hiện tại", "Current password"),
    "new_password": ("Mật khẩu mới (ít nhất 12 ký tự)", "New password (at least 12 characters)"),
    "save": ("Lưu", "Save"),
    "password_changed": ("Đã đổi mật khẩu.", "Password changed."),
    "password_current_wrong": ("Mật khẩu hiện tại không đúng.", "The current password is wrong."),
    "password_too_short": ("Mật khẩu mới quá ngắn.", "The new password is too short."),
    "password_too_long": ("Mật khẩu mới quá dài.", "The new password is too long."),
    "password_same": ("Mật khẩu mới phải khác mật khẩu cũ.", "The new password must differ from the old one."),
    "open": ("Đang mở", "Open"),
    "closed": ("Đã đóng", "Closed"),
    "search": ("Tìm kiếm", "Search"),
    "search_label": ("Tìm theo tên, tiêu đề hoặc nội dung", "Search name, subject or body"),
    "search_button": ("Tìm", "Search"),
    "no_messages": ("Không có thư nào.", "No messages."),
    "from": ("Người gửi", "From"),
    "subject": ("Tiêu đề", "Subject"),
    "received": ("Nhận lúc", "Received"),
    "status": ("Trạng thái", "Status"),
    "replies": ("Trả lời", "Replies"),
    "no_subject": ("(không có tiêu đề)", "(no subject)"),
    "next_page": ("Trang sau", "Next page"),
    "first_page": ("Trang đầu", "First page"),
    "status_new": ("Mới", "New"),
    "status_answered": ("Đã trả lời", "Answered"),
    "status_closed": ("Đã đóng", "Closed"),
    "delivery_queued": ("Đang chờ gửi", "Queued"),
    "delivery_sent": ("Đã gửi", "Sent"),
    "delivery_failed": ("Gửi thất bại", "Failed"),
    "message": ("Thư", "Message"),
    "acknowledgement": ("Thư xác nhận đã nhận", "Acknowledgement"),
    "reply_by": ("Trả lời bởi", "Reply by"),
    "no_replies": ("Chưa có trả lời.", "No replies yet."),
    "compose_reply": ("Soạn trả lời", "Write a reply"),
    "reply_body": ("Nội dung trả lời", "Reply text"),
    "preview": ("Xem trước", "Preview"),
    "send_reply": ("Gửi trả lời", "Send reply"),
    "preview_heading": ("Bản xem trước (chưa gửi)", "Preview (not sent yet)"),
    "reply_sent": ("Đã gửi trả lời; e-mail đang được chuyển đi.", "Reply sent; the e-mail is on its way."),
    "reply_empty": ("Nội dung trả lời không được để trống.", "The reply must not be empty."),
    "close_message": ("Đóng thư", "Close message"),
    "reopen_message": ("Mở lại thư", "Reopen message"),
    "message_closed": ("Đã đóng thư.", "Message closed."),
    "message_reopened": ("Đã mở lại thư.", "Message reopened."),
    "closed_note": ("Thư đã đóng; mở lại để trả lời.", "The message is closed; reopen it to reply."),
    "closed_by": ("Đóng bởi", "Closed by"),
    "back_to_inbox": ("Quay lại hộp thư", "Back to the inbox"),
    "orders": ("Đơn hàng", "Orders"),
    "orders_search_label": ("Địa chỉ e-mail của người mua hoặc mã đơn hàng", "Buyer's e-mail address or order id"),
    "orders_bad_query": ("Địa chỉ e-mail không hợp lệ.", "Not a valid e-mail address."),
    "no_orders": ("Không tìm thấy đơn hàng nào.", "No orders found."),
    "order": ("Đơn hàng", "Order"),
    "placed_at": ("Đặt lúc", "Placed"),
    "total": ("Tổng tiền", "Total"),
    "buyer": ("Người mua", "Buyer"),
    "phone": ("Điện thoại", "Phone"),
    "items": ("Sản phẩm", "Items"),
    "quantity": ("Số lượng", "Quantity"),
    "unit_price": ("Đơn giá", "Unit price"),
    "license_keys": ("Khoá bản quyền", "License keys"),
    "no_keys": ("Đơn hàng này chưa có khoá bản quyền.", "This order has no license keys."),
    "version": ("Phiên bản", "Version"),
    "key": ("Khoá", "Key"),
    "reveal_keys": ("Hiện đầy đủ khoá bản quyền", "Reveal the license keys"),
    "reveal_note": (
        "Khoá được che. Việc hiện khoá sẽ được ghi vào nhật ký kiểm toán.",
        "Keys are masked. Revealing them is recorded in the audit trail.",
    ),
    "revealed_note": (
        "Khoá đang hiện đầy đủ; việc này đã được ghi vào nhật ký kiểm toán.",
        "The keys are shown in full; this was recorded in the audit trail.",
    ),
    "card_data_removed": ("Dữ liệu thẻ đã bị loại bỏ khỏi đơn này.", "Card data was removed from this order."),
    "news_consent": ("Đồng ý nhận tin", "News consent"),
    "yes": ("Có", "Yes"),
    "no": ("Không", "No"),
    "back_to_orders": ("Quay lại tìm đơn hàng", "Back to the order search"),
    "role": ("Vai trò", "Role"),
    "role_support": ("Hỗ trợ", "Support"),
    "role_admin": ("Quản trị", "Admin"),
    "account_state": ("Tình trạng", "State"),
    "active": ("Đang hoạt động", "Active"),
    "disabled": ("Đã khoá", "Disabled"),
    "created": ("Tạo lúc", "Created"),
    "forbidden_title": ("Không có quyền", "Forbidden"),
    "forbidden": ("Trang này chỉ dành cho quản trị viên.", "This page is for administrators only."),
    "not_found_title": ("Không tìm thấy", "Not found"),
    "not_found": ("Không tìm thấy trang hoặc thư này.", "No such page or message."),
    "bad_request_title": ("Yêu cầu không hợp lệ", "Bad request"),
    "csrf_failed": (
        "Biểu mẫu đã hết hạn hoặc không hợp lệ. Hãy tải lại trang rồi thử lại.",
        "The form has expired or is not valid. Reload the page and try again.",
    ),
    "unauthorized_title": ("Cần đăng nhập", "Login required"),
    "unauthorized": ("Vui lòng đăng nhập để tiếp tục.", "Please log in to go on."),
    "upstream_title": ("Dịch vụ không phản hồi", "A service did not answer"),
    "upstream": (
        "Một dịch vụ phía sau không phản hồi được. Vui lòng thử lại sau ít phút.",
        "A service behind the console could not answer. Please try again in a few minutes.",
    ),
    "conflict": ("Thư đã đóng; không thể trả lời.", "The message is closed; it cannot be answered."),
}


def translate(language: Language, key: str, **values: object) -> str:
    vi, en = TEXTS[key]
    text = vi if language == "vi" else en
    return text.format(**values) if values else text


def chosen(value: str | None) -> Language:
    return "en" if value == "en" else DEFAULT
