//! RedisStore (being written).
