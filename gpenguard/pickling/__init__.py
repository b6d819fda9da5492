"""The pickle machine: an opcode decoder and a symbolic stack/memo walker, with nothing executed.

This is the bottom layer. `scan/` judges what it resolves (allowlist, rules, findings) and the
container readers in `formats/` use it to find pickles and their persistent ids; it imports
nothing from either, so neither judgement nor container code can shape how bytes are decoded.
"""
