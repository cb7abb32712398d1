//! route-finder
