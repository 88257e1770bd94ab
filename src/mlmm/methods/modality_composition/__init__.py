"""Modality composition (survey category 1, data processing at the input level): fill the
missing modality (or missing time steps) with a composed value — a constant (``zero-fill``,
``mean-fill``), a retrieved training row (``retrieval-fill``), or the last observed frame
(``frame-repeat``) — and train one model on the filled input."""
