"""The Audience's Dagster definitions: the ``audience_contacts`` asset, its job and sensor."""
