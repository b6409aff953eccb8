"""`templates`: the generator's offline script writer. A deterministic catalogue of common parts
(box, plate with holes, cylinder, tube, flange, L-bracket, standoff, enclosure) that reads sizes
and units from a prompt and renders a headless FreeCAD script, with the geometry the part must
measure. Pure Python, no I/O: the generator's adapter calls make_part.

    part = make_part("plate 100 by 60 by 5 mm with four M5 holes")
    part.kind, part.parameters, part.script, part.expected

A prompt it cannot make raises ports.CannotMake, whose message lists the catalogue. See
docs/templates.md for the prompt grammar, units, defaults and edits.
"""

from services.generator.templates.maker import (
    CATALOGUE,
    PROVIDER,
    CatalogueEntry,
    TemplatePart,
    make_part,
)

__all__ = ["CATALOGUE", "PROVIDER", "CatalogueEntry", "TemplatePart", "make_part"]
