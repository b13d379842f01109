"""The one error type every decoder raises on bad input."""


class DecodeError(ValueError):
    """Malformed or invalid input.

    ``field`` names what was being read (e.g. ``"offer.offer_paths[0].num_hops"``) and ``reason`` says
    what was wrong with it.  Decoders raise only this, never IndexError/struct.error from deep inside.
    """

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
