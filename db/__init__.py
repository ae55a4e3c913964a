"""Storage: SQLAlchemy 2 schema and one store object (issue 5). Knows no model."""
