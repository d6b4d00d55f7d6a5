//! In-process MemoryStore (being written).
