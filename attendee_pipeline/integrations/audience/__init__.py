"""Audience (seed 003): one cross-event contact database per audience, fed by the published
guest lists of the events it listens to, under the organiser's rules; a destination inside the
platform, not a source."""
