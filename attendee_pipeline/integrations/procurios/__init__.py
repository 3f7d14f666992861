"""The Procurios integration (seed 002): a meeting's registrations pulled incrementally
(``source``), its rules (``rules``), the personal programmes (``programmes``), its Dagster
definitions -- the programme assets the sync step materialises after the publish, the window
and nightly schedules, the check-in write-back (``defs``) -- and its sandbox (``sandbox``)."""
