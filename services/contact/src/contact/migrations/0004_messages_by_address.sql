-- A privacy request (access or erasure) finds an address's messages case-insensitively, without a scan.
CREATE INDEX messages_email_lower ON messages (lower(email));
