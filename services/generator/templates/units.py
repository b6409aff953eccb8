"""Units, number words and the metric thread tables the template catalogue reads prompts with.

Every length inside the catalogue is in millimetres; a prompt's unit is converted once, here.
"""

from __future__ import annotations

MM_PER_UNIT: dict[str, float] = {
    "mm": 1.0,
    "cm": 10.0,
    "m": 1000.0,
    "in": 25.4,
    "ft": 304.8,
}
"""Millimetres per unit, by canonical unit name."""

UNIT_WORDS: dict[str, str] = {
    "mm": "mm",
    "millimeter": "mm",
    "millimeters": "mm",
    "millimetre": "mm",
    "millimetres": "mm",
    "cm": "cm",
    "centimeter": "cm",
    "centimeters": "cm",
    "centimetre": "cm",
    "centimetres": "cm",
    "m": "m",
    "meter": "m",
    "meters": "m",
    "metre": "m",
    "metres": "m",
    "in": "in",
    "inch": "in",
    "inches": "in",
    '"': "in",
    "ft": "ft",
    "foot": "ft",
    "feet": "ft",
}
"""How a unit may be written (after the prompt is lower-cased), to its canonical name."""

NUMBER_WORDS: dict[str, int] = {
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
}

# ISO 273, medium series: the clearance hole for a bolt of each metric size ("four M5 holes").
CLEARANCE_HOLE_MM: dict[float, float] = {
    1.6: 1.8,
    2.0: 2.4,
    2.5: 2.9,
    3.0: 3.4,
    4.0: 4.5,
    5.0: 5.5,
    6.0: 6.6,
    8.0: 9.0,
    10.0: 11.0,
    12.0: 13.5,
    14.0: 15.5,
    16.0: 17.5,
    20.0: 22.0,
    24.0: 26.0,
    30.0: 33.0,
}

# The tap drill of each metric coarse thread (ISO 261 pitch, about 75 % thread engagement): the
# bore of a standoff that is tapped for that thread ("standoff M3").
TAP_DRILL_MM: dict[float, float] = {
    1.6: 1.25,
    2.0: 1.6,
    2.5: 2.05,
    3.0: 2.5,
    4.0: 3.3,
    5.0: 4.2,
    6.0: 5.0,
    8.0: 6.8,
    10.0: 8.5,
    12.0: 10.2,
}

# ISO 4032 nut width across flats: the default body of a hexagonal standoff of each size.
HEX_ACROSS_FLATS_MM: dict[float, float] = {
    1.6: 3.2,
    2.0: 4.0,
    2.5: 5.0,
    3.0: 5.5,
    4.0: 7.0,
    5.0: 8.0,
    6.0: 10.0,
    8.0: 13.0,
    10.0: 16.0,
    12.0: 18.0,
}


def to_mm(value: float, unit: str) -> float:
    """value in unit as millimetres, rounded to a nanometre so that 1 in is 25.4, not
    25.400000000000002."""
    return round(value * MM_PER_UNIT[unit], 6)


def thread_name(size: float) -> str:
    """M5, M2.5."""
    return f"M{size:g}"


def sizes(table: dict[float, float]) -> str:
    """The thread sizes a table knows, for messages: "M1.6, M2, ..., M30"."""
    return ", ".join(thread_name(size) for size in sorted(table))
