"""``python -m attendee_pipeline.bench`` (``make bench``); see :mod:`attendee_pipeline.bench`."""

from attendee_pipeline.bench.run import main

if __name__ == "__main__":
    raise SystemExit(main())
