"""Dagster definitions of the push feed (seed 001): the sensor that publishes the inbox."""
