"""The faces of a rating scale, drawn: the same picture beside each level on the unit's
screen and on the visitor's phone, so a visitor who reads little finds the scale they
know. Plain SVG (no emoji font: they look alike on every device), standard library only.

Level 1 is the saddest face, the top level the happiest; the mouth bends evenly between.
The face is decoration beside the number and the word (``aria-hidden``): the button or
the radio label already says its level.
"""

from __future__ import annotations


def face(level: int, scale: int) -> str:
    """The face for ``level`` (1..``scale``) as inline SVG markup."""
    if not 1 <= level <= scale or scale < 2:
        raise ValueError(f"level {level} of {scale}")
    bend = -1 + 2 * (level - 1) / (scale - 1)  # -1 saddest .. +1 happiest
    mouth_y = 31 - 3 * bend
    control_y = mouth_y + 12 * bend
    return (
        '<svg class="face" viewBox="0 0 48 48" width="48" height="48" aria-hidden="true" '
        'focusable="false" xmlns="http://www.w3.org/2000/svg">'
        '<circle cx="24" cy="24" r="21" fill="#fff" stroke="#111" stroke-width="3"/>'
        '<circle cx="17" cy="19" r="3" fill="#111"/><circle cx="31" cy="19" r="3" fill="#111"/>'
        f'<path d="M14 {mouth_y:.1f} Q24 {control_y:.1f} 34 {mouth_y:.1f}" fill="none" '
        'stroke="#111" stroke-width="3" stroke-linecap="round"/></svg>'
    )
