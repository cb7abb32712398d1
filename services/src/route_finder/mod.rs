//! route-finder: shortest paths over the transport graph.

pub mod graph;

pub use graph::{Graph, Hop, Path, SearchError, SearchOptions};
