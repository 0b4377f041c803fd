"""Test support shared by every service's tests: a throwaway database and exchange, an SMTP server."""
