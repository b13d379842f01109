"""The key operations crypto/blinding.py makes without coincurve's PrivateKey (which computes two public
keys when it is made): the same results as PrivateKey's methods, the same refusals."""

import pytest
from coincurve import PrivateKey
from hypothesis import given, settings, strategies as st

from asyncreceive.crypto.blinding import ecdh, pubkey_of, secret_times

_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_keys = st.integers(1, _N - 1).map(lambda k: k.to_bytes(32, "big"))


@settings(max_examples=200, deadline=None)
@given(_keys, _keys, _keys)
def test_key_operations_agree_with_coincurves_private_key(a, b, c):
    pub_b = PrivateKey(b).public_key.format()
    assert ecdh(a, pub_b) == PrivateKey(a).ecdh(pub_b)
    assert pubkey_of(a) == PrivateKey(a).public_key.format()
    assert secret_times(a, c) == PrivateKey(a).multiply(c).secret
    assert int.from_bytes(secret_times(a, c), "big") == int.from_bytes(a, "big") * int.from_bytes(c, "big") % _N


def test_key_operations_refuse_bad_keys():
    good = (1).to_bytes(32, "big")
    for bad in (b"\x00" * 32, _N.to_bytes(32, "big"), b"\xff" * 32):
        with pytest.raises(ValueError):
            ecdh(bad, pubkey_of(good))
        with pytest.raises(ValueError):
            pubkey_of(bad)
        with pytest.raises(ValueError):
            secret_times(good, bad)
        with pytest.raises(ValueError):
            secret_times(bad, good)
    with pytest.raises(ValueError):
        ecdh(good, b"\x02" + b"\x00" * 32)     # not a point
