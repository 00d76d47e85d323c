"""Usage and cost: prices (:mod:`.pricing`), what was spent (:mod:`.report`)."""
