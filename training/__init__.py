"""Training and evaluation code built on histo_encoders (never imported by it)."""
