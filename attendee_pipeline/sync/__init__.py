"""Pure sync logic: the platform attendee model, mapping, validation schemas, diff and apply
policies, event windows. Nothing in this package imports Dagster or touches the network or the
database; everything here is a function of its inputs so it can be tested and benchmarked alone.
"""
