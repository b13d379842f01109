"""Online-fallback records on real nodes: a stock CLN payer's invoice_requests (fetchinvoice) leave sealed
records at the recipient that are answered at a bounded rate, deleted once paid, and deleted after their
invoice expires (a short expiry set through the regtest-only dev variable)."""

import hashlib

from pyln.client import RpcError
from pyln.testing.utils import wait_for

from asyncreceive.fallback.policy import ANSWER_BURST
from asyncreceive.fallback.service import DEV_FALLBACK_EXPIRY_ENV
from asyncreceive.fallback.store import FALLBACK_PREFIX
from asyncreceive.wire.tlv import decode_tlv

from .test_payments import setup

EXPIRY = 30


def records(node):
    out = {}
    for e in node.rpc.listdatastore(key=FALLBACK_PREFIX)["datastore"]:
        if "hex" in e:
            out[e["key"][-1]] = bytes.fromhex(e["hex"])
    return out


def test_fallback_records_are_rate_limited_sealed_and_expire(node_factory, plugin_opts, monkeypatch):
    monkeypatch.setenv(DEV_FALLBACK_EXPIRY_ENV, str(EXPIRY))
    # stock fetchinvoice does not pace its onion messages: the server may warn it (CLN's 4/s per peer)
    plugin_opts = dict(plugin_opts, **{"asyncreceive-tick-seconds": 2, "allow_warning": True})
    payer, server, recipient, offer, invoice = setup(node_factory, plugin_opts)

    # a paid one: its record goes as soon as the payment record takes over
    got = payer.rpc.fetchinvoice(offer=offer.to_string(), amount_msat=21_000)
    ph = payer.rpc.decode(got["invoice"])["invoice_payment_hash"]
    assert ph in records(recipient)
    res = payer.rpc.pay(got["invoice"])
    assert hashlib.sha256(bytes.fromhex(res["payment_preimage"])).hexdigest() == ph
    wait_for(lambda: ph not in records(recipient))
    assert [p["payment_hash"] for p in recipient.rpc.call("asyncreceive-listpayments")["payments"]] == [ph]

    # invoice_requests for one offer, one after the other (lightningd's own pace: several a second): the
    # recipient answers ANSWER_BURST, then one per refill
    answered, refused = [], []
    for i in range(ANSWER_BURST + 4):
        try:
            answered.append(payer.rpc.fetchinvoice(offer=offer.to_string(), amount_msat=1000 + i, timeout=3))
        except RpcError as e:
            refused.append(e)
    dropped = recipient.rpc.call("asyncreceive-status")["messages"]["dropped"]
    print(f"answered {len(answered)}, refused {len(refused)}, recipient drops {dropped}")
    assert refused and dropped.get("rate_limited", 0) >= 1
    # one record per invoice the recipient answered (some may reach the payer after its timeout), none
    # for those it refused
    recs = records(recipient)
    status = recipient.rpc.call("asyncreceive-status")
    assert len(recs) == status["forwarded_invoice_requests"] - 1 == status["fallback_invoices"]
    assert {payer.rpc.decode(a["invoice"])["invoice_payment_hash"] for a in answered} <= set(recs)
    for h, val in recs.items():
        types = [t for t, _ in decode_tlv(val, "fallback", known=lambda t: True).records]
        assert 10 in types and 0 not in types  # the preimage is sealed, never clear
    # after the invoices expire (EXPIRY) and their grace (at most EXPIRY here), the tick deletes them all
    wait_for(lambda: records(recipient) == {}, timeout=3 * EXPIRY + 30)
    assert recipient.rpc.call("asyncreceive-status")["fallback_invoices"] == 0
