"""The imperative shell: lightningd adapter, onion-message transport, background worker."""
