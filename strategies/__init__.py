"""Completeness checks (``checkers``) and wide-row generators (``generators``), both read from a
flow's declaration, and an entity's facts (``facts``)."""
