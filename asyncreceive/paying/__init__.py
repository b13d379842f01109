"""Paying: invoice_requests, static and normal invoices, held_htlc_available and the payment (policy.py pure, service.py its shell)."""
