"""The generator: text to CAD. A prompt becomes a FreeCAD script (an LLM provider or the offline
template catalogue), uploaded through the script service as the caller's next version, run by the
worker, verified against the expected geometry and repaired from the real error and the measured
geometry, a bounded number of rounds (docs/generator.md)."""
