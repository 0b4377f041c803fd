"""Orders in, license keys out, purchaser requests and upgrade fan-out."""
