"""Pure encoders: events in, bytes out. One per output format; none re-parses another."""
