"""Onion messages: join a destination's blinded path, build our reply paths, peel the phantom hop.

Sending.  Our node is a blinded first hop (``next_node_id`` = their introduction node,
``next_path_key_override`` = their first path key) in front of the destination's hops, unless we are
their introduction node, in which case their path is used as it is.  The final hop carries the
``onionmsg_tlv`` (reply_path, encrypted_recipient_data and the message).  The result is a list of
(blinded node id, payload) and the first path key: exactly what ``createonion`` and
``injectonionmessage`` take.

Receiving on a stock lightningd.  Paths we build end ``[..., our node, phantom]``.  Our node's hop says
``next_node_id = phantom``; lightningd cannot forward there and emits ``onionmessage_forward_fail``
with the outgoing ``onion_message``.  :func:`peel_phantom` removes that last layer with the phantom key.
"""

import os
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from ..errors import DecodeError
from ..wire.messages import OnionMessagePayload
from ..wire.paths import BlindedPath
from .blinding import (EncryptedData, blinded_privkey, build_blinded_path, decrypt_with_secret, hop_secret,
                       pad_payloads)
from .context import CONTEXT_TLV_TYPE
from .sphinx import HMAC_LEN, decode_onion_message, peel_packet

#: sphinx routing-info sizes lightningd uses for onion messages
SMALL_ONION = 1300
LARGE_ONION = 32768


@dataclass(frozen=True)
class OutgoingOnion:
    """What ``createonion`` + ``injectonionmessage`` need."""

    path_key: bytes                       # first path key, for injectonionmessage
    hops: Tuple[Tuple[bytes, bytes], ...]  # (blinded node id, onionmsg_tlv payload without length)
    onion_size: int


def onion_size_for(payloads: Sequence[bytes]) -> int:
    from ..wire.tlv import bigsize

    need = sum(len(bigsize(len(p))) + len(p) + HMAC_LEN for p in payloads)
    if need <= SMALL_ONION:
        return SMALL_ONION
    if need <= LARGE_ONION:
        return LARGE_ONION
    raise ValueError(f"onion message payloads need {need} bytes, more than {LARGE_ONION}")


def build_outgoing(our_node_id: bytes, dest: BlindedPath, message_type: int, message: bytes,
                   reply_path: Optional[BlindedPath] = None, session_key: Optional[bytes] = None,
                   intro_node_id: Optional[bytes] = None, route: Sequence[bytes] = (),
                   via_scid: Optional[int] = None) -> OutgoingOnion:
    """Hops and first path key to send ``message`` to ``dest`` from our node.

    ``intro_node_id`` resolves a sciddir introduction node (the caller looks it up); a pubkey
    introduction node is used as it is.  ``route`` lists the nodes between us and the introduction node
    when we are not its peer (found in the channel graph); they get blinded hops of ours.

    With ``via_scid`` the introduction node is not named: the last node of ``route`` forwards to the
    peer at the other end of its channel ``via_scid`` (``short_channel_id`` in its hop), which is how a
    sciddir introduction our gossip does not know can still be reached through the peer that has it.
    """
    if via_scid is not None:
        if not route:
            raise ValueError("via_scid needs the node that has the channel")
        nodes = [our_node_id] + list(route)
        datas = [EncryptedData(next_node_id=n).encode() for n in nodes[1:]]
        datas.append(EncryptedData(short_channel_id=via_scid, next_path_key_override=dest.first_path_key).encode())
        ours = build_blinded_path(session_key or os.urandom(32), list(zip(nodes, datas)))
        hops = [(h.blinded_node_id, h.encrypted_recipient_data) for h in ours.hops + dest.hops]
        return _assemble(ours.first_path_key, hops, message_type, message, reply_path)
    intro = dest.first_node_id or intro_node_id
    if intro is None:
        raise ValueError("destination path starts at a short_channel_id that was not resolved")
    if intro == our_node_id:
        path_key = dest.first_path_key
        hops = [(h.blinded_node_id, h.encrypted_recipient_data) for h in dest.hops]
    else:
        nodes = [our_node_id] + list(route)
        datas = [EncryptedData(next_node_id=n).encode() for n in nodes[1:]]
        datas.append(EncryptedData(next_node_id=intro, next_path_key_override=dest.first_path_key).encode())
        ours = build_blinded_path(session_key or os.urandom(32), list(zip(nodes, datas)))
        path_key = ours.first_path_key
        hops = [(h.blinded_node_id, h.encrypted_recipient_data) for h in ours.hops]
        hops += [(h.blinded_node_id, h.encrypted_recipient_data) for h in dest.hops]
    return _assemble(path_key, hops, message_type, message, reply_path)


def _assemble(path_key: bytes, hops, message_type: int, message: bytes,
              reply_path: Optional[BlindedPath]) -> OutgoingOnion:
    """The final hop carries the message; every other hop only its encrypted data."""
    payloads = []
    for i, (node, enc) in enumerate(hops):
        if i == len(hops) - 1:
            p = OnionMessagePayload(message_type, message, reply_path, enc)
        else:
            p = OnionMessagePayload(encrypted_recipient_data=enc)
        payloads.append((node, p.encode()))
    return OutgoingOnion(path_key, tuple(payloads), onion_size_for([p for _, p in payloads]))


def build_reply_path(route: Sequence[bytes], phantom_id: bytes, path_id: bytes, context: bytes,
                     session_key: Optional[bytes] = None, pad: bool = True) -> BlindedPath:
    """A blinded path ``route[0] -> ... -> route[-1] -> phantom``; ``route[-1]`` is our node.

    The phantom hop carries ``path_id`` (type 6) and our context (type 65537).  With ``pad`` every hop's
    plaintext is padded to one length, so hop sizes don't tell where the path ends.
    """
    if not route:
        raise ValueError("route must hold at least our own node")
    nodes = list(route) + [phantom_id]
    datas = [EncryptedData(next_node_id=nodes[i + 1]) for i in range(len(route))]
    datas.append(EncryptedData(path_id=path_id, unknown=((CONTEXT_TLV_TYPE, context),)))
    if pad:
        datas = pad_payloads(datas)
    return build_blinded_path(session_key or os.urandom(32), [(n, d.encode()) for n, d in zip(nodes, datas)])


@dataclass(frozen=True)
class PeeledMessage:
    payload: OnionMessagePayload
    hop_data: EncryptedData

    @property
    def context_bytes(self) -> Optional[bytes]:
        for t, v in self.hop_data.unknown:
            if t == CONTEXT_TLV_TYPE:
                return v
        return None


def peel_phantom(phantom_priv: bytes, onion_message: bytes) -> PeeledMessage:
    """Peel the last layer of a wire ``onion_message`` addressed to our phantom key.

    Raises DecodeError if it is malformed, not for us, not the final hop, or has no recipient data.
    """
    path_key, packet = decode_onion_message(onion_message)
    ss = hop_secret(phantom_priv, path_key, "phantom.encrypted_recipient_data.path_key")   # one ECDH for both
    payload, next_packet = peel_packet(blinded_privkey(phantom_priv, path_key, ss=ss), packet)
    if next_packet is not None:
        raise DecodeError("onion_message", "phantom hop is not the final hop")
    omp = OnionMessagePayload.decode(payload)
    if omp.encrypted_recipient_data is None:
        raise DecodeError("onionmsg_tlv.encrypted_recipient_data", "missing at the final hop")
    hop = decrypt_with_secret(ss, omp.encrypted_recipient_data, "phantom.encrypted_recipient_data")
    if hop.next_node_id is not None or hop.short_channel_id is not None:
        raise DecodeError("phantom.encrypted_recipient_data", "final hop names a next node")
    return PeeledMessage(omp, hop)
