"""HTTP views: thin adapters between aiohttp requests and the store's services
(``store_server.services``); never the database."""
