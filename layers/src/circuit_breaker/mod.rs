//! placeholder, filled by the circuit_breaker work
