"""The services: what the views call. Each owns one responsibility and reaches the database
only through the `storage` package."""
