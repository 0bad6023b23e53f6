"""HTTP views: thin adapters between aiohttp requests and the store service."""
