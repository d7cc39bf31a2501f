"""Pure domain types of the offer platform: no I/O, no framework imports."""
