"""Route blinding, onion messages and authenticated path contexts.  Pure: no RPC, no clock."""
