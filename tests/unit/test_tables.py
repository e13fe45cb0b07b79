"""The user-state table's RocksDB memory is bounded by one setting."""

from faust.stores.rocksdb import RocksDBOptions

from app.factory import faust_app
from app.settings import Settings
from app.tables import MIB, user_state_table


def test_the_table_partitions_rocksdb_memory_is_the_configured_budget():
    settings = Settings(table_memory_mib=64, store="memory://")
    table = user_state_table(faust_app(settings), settings)

    options = RocksDBOptions(**table.options)

    assert options.block_cache_size == 32 * MIB
    assert options.write_buffer_size * options.max_write_buffer_number == 32 * MIB
