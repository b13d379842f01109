"""The online fallback, in one place: when the recipient is online, an invoice_request our server forwards
is answered with a normal BOLT 12 invoice signed with the offer's key (so the payer gets proof of
payment), its preimage stored (sealed) first, and the HTLC paying it claimed.

policy.py (pure: the invoice, the bounds on its records), store.py (the record, the sealed preimage),
service.py (the shell: the recipient's service hands it forwarded invoice_requests, the payments
service asks it about HTLCs on its paths).
"""
