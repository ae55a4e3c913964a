"""Storage: the SQLAlchemy 2 schema and one `Store` object (issue 5). Knows no model.

The rest of the studio imports only these names; nothing outside `db/` talks SQL, so the backend and the schema
can change without touching the UI or the evaluation code. Opening a `Store` migrates its database (`db.migrate`);
one written by a newer Persona Studio raises `SchemaTooNew` instead.
"""

from .migrate import SchemaTooNew
from .store import OutputIn, RatingRefused, Reveal, RoundIn, SlotView, Store, StoreBusy

__all__ = ["OutputIn", "RatingRefused", "Reveal", "RoundIn", "SchemaTooNew", "SlotView", "Store", "StoreBusy"]
