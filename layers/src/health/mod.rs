//! placeholder, filled by the health work
