"""Payments: releasing held HTLCs, claiming async HTLCs, and paying static invoices."""
