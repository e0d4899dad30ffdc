"""fedrx."""
