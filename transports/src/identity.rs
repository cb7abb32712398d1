//! placeholder, filled by the identity work
