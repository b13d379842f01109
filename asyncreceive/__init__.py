"""asyncreceive: BOLT 12 async receive (static invoices, bLIP-66) for Core Lightning."""

__version__ = "0.1.0"
