"""Pure codecs: bytes <-> objects.  No RPC, no clock."""
