"""Hypothesis strategies shared by the codec tests."""

from coincurve import PrivateKey
from hypothesis import strategies as st

from asyncreceive.wire.paths import BlindedHop, BlindedPath, BlindedPayInfo, SciddirOrPubkey

secrets = st.binary(min_size=32, max_size=32).filter(lambda b: 0 < int.from_bytes(b, "big") < 2**256 - 2**129)
points = secrets.map(lambda s: PrivateKey(s).public_key.format())

introductions = st.one_of(
    points.map(lambda p: SciddirOrPubkey(node_id=p)),
    st.builds(lambda s, d: SciddirOrPubkey(scid=s, direction=d), st.integers(0, 2**64 - 1), st.integers(0, 1)),
)
hops = st.builds(BlindedHop, points, st.binary(max_size=80))
blinded_paths = st.builds(lambda i, k, h: BlindedPath(i, k, tuple(h)), introductions, points,
                          st.lists(hops, min_size=1, max_size=4))
payinfos = st.builds(BlindedPayInfo, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**16 - 1),
                     st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.binary(max_size=8))
