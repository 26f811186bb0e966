"""Pure HTTP, stdlib only: byte ranges (RFC 9110 §14), HTTP dates, typed errors, request targets."""
