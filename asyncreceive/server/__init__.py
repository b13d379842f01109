"""Server role: a static invoice server for often-offline clients (bLIP-66 server side)."""
