"""Persistence: SQLAlchemy tables, the database handle and the queries over them."""
