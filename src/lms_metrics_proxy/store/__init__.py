"""Storage: the schema and its migrations, the writer task, the statistics.

The only package that imports SQLAlchemy. The relay hands `Record`s to a
`Writer`; the API reads through `queries`. Nothing here imports aiohttp.
"""

from lms_metrics_proxy.store.database import Database, open_database
from lms_metrics_proxy.store.filters import Filters
from lms_metrics_proxy.store.record import Record
from lms_metrics_proxy.store.writer import Writer

__all__ = ["Database", "Filters", "Record", "Writer", "open_database"]
