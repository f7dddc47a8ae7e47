"""Default BCM pin numbers; hardware/pinmap.md shows the same table (a test keeps them equal)."""

from __future__ import annotations

#: Rating buttons, worst (score 1) to best; a 3- or 4-button unit uses the first ones.
RATING_BUTTONS = (5, 6, 13, 19, 26)
#: The LED inside (or beside) each rating button, same order.
RATING_LEDS = (12, 16, 20, 21, 25)
#: Staff "arm" button at the desk side.
ARM_BUTTON = 17
#: "Please rate" prompt LED (ring around the buttons).
PROMPT_LED = 27
#: Fault / not-counted LED (amber).
FAULT_LED = 22
#: Active buzzer (driven through a transistor).
BUZZER = 18
#: Badge reader on the primary UART (GPIO 14 TXD, GPIO 15 RXD).
UART_TXD = 14
UART_RXD = 15

PIN_MAP: dict[str, int] = {
    **{f"button_{i + 1}": pin for i, pin in enumerate(RATING_BUTTONS)},
    **{f"led_{i + 1}": pin for i, pin in enumerate(RATING_LEDS)},
    "arm_button": ARM_BUTTON,
    "prompt_led": PROMPT_LED,
    "fault_led": FAULT_LED,
    "buzzer": BUZZER,
    "uart_txd": UART_TXD,
    "uart_rxd": UART_RXD,
}
