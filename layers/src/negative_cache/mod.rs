//! placeholder, filled by the negative_cache work
