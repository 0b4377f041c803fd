"""Every e-mail the system sends, once, in Vietnamese or English."""
