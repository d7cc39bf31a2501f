"""The HTTP layer: Litestar app, schemas, auth and error mapping. No business logic here."""
